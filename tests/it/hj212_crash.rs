//! HJ 212 devices while the hub is killed: a device sends readings
//! stop-and-wait (next frame after the 9014 reply; no reply within 2 s →
//! resend, as HJ 212 devices do), the hub is killed with SIGKILL in the
//! middle and started again. Every frame the hub acknowledged must be in
//! the library — an ack is a promise that the reading is stored — and no
//! reading is stored twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lianqin_tests::{count, lianqin_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::env_streams::{W001, frame, mapping, reading};

const FRAMES: usize = 200;

/// Reads one reply line (up to CRLF) or fails after `wait`.
async fn reply(c: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    let read = async {
        while !line.ends_with(b"\r\n") {
            match c.read(&mut b).await {
                Ok(1) => line.push(b[0]),
                _ => return false,
            }
        }
        true
    };
    match tokio::time::timeout(wait, read).await {
        Ok(true) => Some(String::from_utf8_lossy(&line).into_owned()),
        _ => None,
    }
}

/// A stop-and-wait device; pushes the QN of every frame the hub acked.
async fn device(addr: String, acked: Arc<Mutex<Vec<String>>>) {
    let mut conn: Option<TcpStream> = None;
    for i in 0..FRAMES {
        let time = format!("20251008{:02}{:02}00", i / 60, i % 60);
        // Flag=5: HJ 212-2017 (V bits 4) with the A bit (reply wanted).
        let bytes = frame(&reading(W001, "2051", &time, "Avg", 0.38).replace(";Flag=4;", ";Flag=5;"));
        let qn = format!("QN={time}000");
        loop {
            if conn.is_none() {
                match TcpStream::connect(&addr).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            if c.write_all(&bytes).await.is_err() {
                conn = None;
                continue;
            }
            match reply(c, Duration::from_secs(2)).await {
                Some(r) if r.contains("CN=9014") && r.contains(&qn) => {
                    acked.lock().unwrap().push(qn);
                    break;
                }
                // No (matching) reply: reconnect and resend.
                _ => conn = None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_frame_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = d.join("hub.toml");
    std::fs::write(
        &conf,
        format!(
            r#"node = "hj212-crash"
[[sources]]
id = "env_hj212_water"
department = "ecology"
mapping = "{m}"
[sources.connector]
type = "hj212"
listen = "127.0.0.1:{port}"
batch_linger_ms = 5
"#,
            m = mapping("env_hj212_water")
        ),
    )
    .unwrap();
    let spawn = || {
        std::process::Command::new(lianqin_bin())
            .args(["run", "--config"])
            .arg(&conf)
            .arg("--data-dir")
            .arg(d)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn lianqin run")
    };
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut hub = spawn();
    let dev = tokio::spawn(device(format!("127.0.0.1:{port}"), Arc::clone(&acked)));
    // Kill once the device is well under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < FRAMES / 4 {
        assert!(std::time::Instant::now() < deadline, "the device never got {} acks", FRAMES / 4);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.kill().expect("kill -9");
    let _ = hub.wait();
    let acked_at_kill = acked.lock().unwrap().len();
    let mut hub = spawn();
    let finished = tokio::time::timeout(Duration::from_secs(300), dev).await;
    // Let the worker commit what the connector published last.
    let stored = lianqin_tests::wait_until(Duration::from_secs(120), || async {
        match lianqin_tests::try_engine(d).await {
            Ok(e) => e.scalar_i64("SELECT count(*) FROM raw_env_hj212_water").await.unwrap_or(-1) >= FRAMES as i64,
            Err(_) => false,
        }
    })
    .await;
    hub.kill().ok();
    let _ = hub.wait();
    assert!(
        finished.is_ok(),
        "the device did not get every frame acknowledged ({} of {FRAMES})",
        acked.lock().unwrap().len()
    );
    assert!(stored, "not every reading reached the raw table (killed after {acked_at_kill} acks)");
    // Every reading exactly once: acked before the kill, resent after it,
    // or stored but unacknowledged and then resent (a repeat).
    assert_eq!(count(d, "SELECT count(*) FROM raw_env_hj212_water").await, FRAMES as i64);
    assert_eq!(count(d, "SELECT count(DISTINCT source_key) FROM raw_env_hj212_water").await, FRAMES as i64);
    assert_eq!(count(d, "SELECT count(*) FROM quarantine").await, 0);
}
