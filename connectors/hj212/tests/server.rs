mod common;

use std::time::Duration;

use common::*;
use lianqin_hj212::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

async fn start(
    cfg: Hj212ServerConfig,
    cap: usize,
) -> (std::net::SocketAddr, std::sync::Arc<Hj212Stats>, mpsc::Receiver<Hj212Message>) {
    let (addr, server) = Hj212Server::bind("127.0.0.1:0", cfg).await.unwrap();
    let stats = server.stats();
    let (tx, rx) = mpsc::channel(cap);
    tokio::spawn(server.run(tx));
    (addr, stats, rx)
}

async fn recv(rx: &mut mpsc::Receiver<Hj212Message>) -> Hj212Message {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("message in time").expect("channel open")
}

/// Counters are bumped just after the socket write, so poll briefly.
async fn settled(stats: &Hj212Stats, done: impl Fn(&Hj212StatsSnapshot) -> bool) -> Hj212StatsSnapshot {
    for _ in 0..100 {
        let s = stats.snapshot();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats.snapshot()
}

fn opts(expected: usize) -> DeviceOptions {
    DeviceOptions { expected_replies: Some(expected), reply_wait: Duration::from_secs(3), ..Default::default() }
}

#[tokio::test]
async fn tcp_round_trip_acks_when_flag_asks() {
    let (addr, stats, mut rx) = start(Hj212ServerConfig::default(), 16).await;
    let frames: Vec<Vec<u8>> = [REAL_AIR, SURFACE_WATER, MINUTE_WATER].iter().map(|s| s.as_bytes().to_vec()).collect();
    let report = simulate_device_with(addr, &frames, &opts(2)).await.unwrap();
    // Flag=5, Flag=4 (no reply), Flag=5 → two 9014 acks.
    assert_eq!(report.replies.len(), 2, "{report:?}");
    assert!(report.errors.is_empty());
    for (ack, qn) in report.replies.iter().zip(["20241115190408000", "20250315103000123"]) {
        assert!(ack.crc_ok);
        assert_eq!(ack.cn, "9014");
        assert_eq!(ack.st, "91");
        assert_eq!(ack.qn.as_deref(), Some(qn));
    }
    // The second ack is byte-for-byte the reference 9014 frame.
    assert_eq!(report.replies[1].raw, &DATA_ACK[6..DATA_ACK.len() - 6]);

    let msgs = [recv(&mut rx).await, recv(&mut rx).await, recv(&mut rx).await];
    assert_eq!(msgs[0].frame.mn, "AQI2411132600332");
    assert_eq!(msgs[1].frame.st, "21");
    assert_eq!(msgs[2].frame.cn, "2051");
    assert!(msgs.iter().all(|m| m.frame.crc_ok && m.packets == 1));
    assert_eq!(msgs[0].peer.ip(), addr.ip());
    let s = settled(&stats, |s| s.acks_sent == 2).await;
    assert_eq!((s.frames_ok, s.acks_sent, s.bad_crc, s.malformed, s.messages_forwarded), (3, 2, 0, 0, 3));
}

#[tokio::test]
async fn bad_crc_is_nakked_counted_and_not_forwarded() {
    let (addr, stats, mut rx) = start(Hj212ServerConfig::default(), 16).await;
    let bad = MINUTE_WATER.replace("3600\r\n", "3601\r\n");
    let frames = vec![b"junk".to_vec(), bad.into_bytes(), REAL_AIR.as_bytes().to_vec()];
    let report = simulate_device_with(addr, &frames, &opts(2)).await.unwrap();
    assert_eq!(report.replies.len(), 2, "{report:?}");
    let nak = &report.replies[0];
    assert_eq!(nak.cn, "9011");
    assert_eq!(nak.cp.other["QnRtn"], "9");
    assert_eq!(nak.qn.as_deref(), Some("20250315103000123"));
    assert_eq!(report.replies[1].cn, "9014");

    let m = recv(&mut rx).await;
    assert_eq!(m.frame.mn, "AQI2411132600332");
    // Nothing else arrives.
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
    let s = settled(&stats, |s| s.acks_sent == 1).await;
    assert_eq!((s.frames_ok, s.bad_crc, s.naks_sent, s.acks_sent, s.garbage_bytes), (1, 1, 1, 1, 4));
}

#[tokio::test]
async fn split_writes_and_garbage_over_tcp() {
    let (addr, stats, mut rx) = start(Hj212ServerConfig::default(), 16).await;
    let frames =
        vec![b"\r\n\x00".to_vec(), SURFACE_WATER.as_bytes().to_vec(), b"##00zz".to_vec(), REAL_AIR.as_bytes().to_vec()];
    let o = DeviceOptions { chunk_size: Some(5), ..opts(1) };
    let report = simulate_device_with(addr, &frames, &o).await.unwrap();
    assert_eq!(report.replies.len(), 1);
    assert_eq!(recv(&mut rx).await.frame.st, "21");
    assert_eq!(recv(&mut rx).await.frame.st, "27");
    let s = stats.snapshot();
    assert_eq!((s.frames_ok, s.malformed), (2, 1));
}

#[tokio::test]
async fn multi_packet_message_over_tcp() {
    let (addr, stats, mut rx) = start(Hj212ServerConfig::default(), 16).await;
    let mk = |pno: u32, cp: &str| {
        let seg = format!(
            "QN=20250315110000001;ST=32;CN=2061;PW=123456;MN=33050200000000000000A001;Flag=7;PNUM=3;PNO={pno};CP=&&DataTime=20250315100000;{cp}&&"
        );
        wire(&seg, crc16_hj212(seg.as_bytes()))
    };
    let frames = vec![
        mk(1, "w01018-Avg=20.1,w01018-Flag=N"),
        mk(2, "w21003-Avg=0.5,w21003-Flag=N"),
        mk(3, "w00000-Cou=99.5,w00000-Flag=N"),
    ];
    let report = simulate_device_with(addr, &frames, &opts(3)).await.unwrap();
    assert_eq!(report.replies.len(), 3);
    assert!(report.replies.iter().all(|r| r.cn == "9014" && r.flag == Some(Flag { raw: 4 })));
    let m = recv(&mut rx).await;
    assert_eq!(m.packets, 3);
    assert_eq!(m.frame.cp.factors.len(), 3);
    assert_eq!(frame_to_json(&m.frame)["factors"]["w00000"]["cou"], 99.5);
    assert_eq!(settled(&stats, |s| s.acks_sent == 3).await.messages_forwarded, 1);
}

#[tokio::test]
async fn modbus_server() {
    let cfg = Hj212ServerConfig { crc: CrcVariant::Modbus, ..Default::default() };
    let (addr, stats, mut rx) = start(cfg, 4).await;
    let seg = &MINUTE_WATER[6..MINUTE_WATER.len() - 6];
    let frames = vec![wire(seg, 0x3347)]; // Modbus value from the reference table
    let o = DeviceOptions { crc: CrcVariant::Modbus, ..opts(1) };
    let report = simulate_device_with(addr, &frames, &o).await.unwrap();
    assert_eq!(report.replies.len(), 1);
    assert!(report.replies[0].crc_ok);
    // The ack is the reference 9014 frame with the Modbus CRC AC00.
    assert_eq!(report.replies[0].encode(CrcVariant::Modbus).unwrap(), wire(&DATA_ACK[6..DATA_ACK.len() - 6], 0xAC00));
    assert_eq!(recv(&mut rx).await.frame.cn, "2051");
    // The standard-CRC frame is a bad CRC for this port.
    let report = simulate_device_with(addr, &[MINUTE_WATER.as_bytes().to_vec()], &o).await.unwrap();
    assert_eq!(report.replies[0].cn, "9011");
    assert_eq!(settled(&stats, |s| s.naks_sent == 1).await.bad_crc, 1);
}

#[tokio::test]
async fn no_replies_when_disabled() {
    let cfg = Hj212ServerConfig { reply: false, ..Default::default() };
    let (addr, stats, mut rx) = start(cfg, 4).await;
    let o = DeviceOptions { reply_wait: Duration::from_millis(300), ..Default::default() };
    let report = simulate_device_with(addr, &[REAL_AIR.as_bytes().to_vec()], &o).await.unwrap();
    assert!(report.replies.is_empty());
    recv(&mut rx).await;
    assert_eq!(stats.snapshot().acks_sent, 0);
}

#[tokio::test]
async fn backpressure_ack_only_after_channel_accepts() {
    let (addr, stats, mut rx) = start(Hj212ServerConfig::default(), 1).await;
    let mut dev = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        dev.write_all(REAL_AIR.as_bytes()).await.unwrap();
    }
    let mut dec = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let mut acks = Vec::new();
    let mut buf = [0u8; 1024];
    // Channel capacity 1 and nobody receiving: exactly one ack.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(400), dev.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        acks.extend(dec.decode(&buf[..n]));
    }
    assert_eq!(acks.len(), 1);
    assert_eq!(stats.snapshot().messages_forwarded, 1);
    // Drain: the rest are forwarded and acknowledged.
    for _ in 0..3 {
        recv(&mut rx).await;
    }
    while acks.len() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), dev.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        acks.extend(dec.decode(&buf[..n]));
    }
    assert!(acks.iter().all(|a| a.as_ref().is_ok_and(|f| f.cn == "9014")));
}

#[tokio::test]
async fn run_returns_when_sink_dropped() {
    let (_addr, server) = Hj212Server::bind("127.0.0.1:0", Hj212ServerConfig::default()).await.unwrap();
    let (tx, rx) = mpsc::channel(1);
    let h = tokio::spawn(server.run(tx));
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap().unwrap();
}

/// With `ack_when_durable`, a 9014 reply waits for `DurableAck::confirm`;
/// a message dropped unconfirmed is never acknowledged; replies keep the
/// frames' order even when confirmed out of order.
#[tokio::test]
async fn acks_wait_for_durable_confirmation() {
    let cfg = Hj212ServerConfig { ack_when_durable: true, ..Default::default() };
    let (addr, stats, mut rx) = start(cfg, 16).await;
    let mut dev = TcpStream::connect(addr).await.unwrap();
    // REAL_AIR and MINUTE_WATER ask for a reply (Flag=5).
    dev.write_all(REAL_AIR.as_bytes()).await.unwrap();
    dev.write_all(MINUTE_WATER.as_bytes()).await.unwrap();
    let first = recv(&mut rx).await;
    let second = recv(&mut rx).await;
    assert!(first.durable.is_pending() && second.durable.is_pending());
    let mut buf = vec![0u8; 4096];
    // Nothing confirmed: no reply.
    let early = tokio::time::timeout(Duration::from_millis(300), dev.read(&mut buf)).await;
    assert!(early.is_err(), "a reply before the message was durable: {early:?}");
    // The second is confirmed first: still nothing (order is kept).
    second.durable.confirm();
    let early = tokio::time::timeout(Duration::from_millis(300), dev.read(&mut buf)).await;
    assert!(early.is_err(), "the second reply overtook the first");
    // The first is dropped unconfirmed (not stored): no ack for it; the
    // second's ack follows.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(3), dev.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(text.matches("CN=9014").count(), 1, "{text}");
    assert!(text.contains("QN=20250315103000123"), "the ack names the confirmed message: {text}");
    assert_eq!(settled(&stats, |s| s.acks_sent == 1).await.acks_sent, 1);
}

/// A device that half-closes after sending still gets the acks of messages
/// confirmed durable afterwards.
#[tokio::test]
async fn acks_reach_a_device_that_half_closed() {
    let cfg = Hj212ServerConfig { ack_when_durable: true, ..Default::default() };
    let (addr, _stats, mut rx) = start(cfg, 16).await;
    let mut dev = TcpStream::connect(addr).await.unwrap();
    dev.write_all(MINUTE_WATER.as_bytes()).await.unwrap();
    dev.shutdown().await.unwrap(); // FIN: no more frames
    let m = recv(&mut rx).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    m.durable.confirm();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), dev.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("CN=9014") && text.contains("QN=20250315103000123"), "{text}");
}
