//! Throughput of sealing and opening column values (one core):
//! `cargo run --release -p lianqin-seal --example seal_bench -- [values] [bytes]`
//! (default 1 000 000 values of 18 bytes — a citizen ID — and 200 000 of
//! 600 bytes — a raw record).

use std::time::Instant;

fn run(n: usize, len: usize) {
    let dir = std::env::temp_dir().join(format!("seal-bench-{}", std::process::id()));
    let ring = lianqin_seal::Keyring::open(&dir, [7; 32]).expect("keyring");
    let key = ring.current("police").expect("key");
    let plain: String = "3".repeat(len);
    let t = Instant::now();
    let sealed: Vec<String> = (0..n).map(|_| key.seal_text("element.id_value", &plain)).collect();
    let seal_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut total = 0usize;
    for v in &sealed {
        total += ring.open_text("element.id_value", v).expect("opens").len();
    }
    let open_s = t.elapsed().as_secs_f64();
    assert_eq!(total, n * len);
    println!(
        "{n} values of {len} bytes: seal {:.0} values/s ({:.0} MB/s), open {:.0} values/s ({:.0} MB/s); sealed size {} bytes",
        n as f64 / seal_s,
        (n * len) as f64 / seal_s / 1e6,
        n as f64 / open_s,
        (n * len) as f64 / open_s / 1e6,
        sealed[0].len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    match args.as_slice() {
        [n, len] => run(*n, *len),
        _ => {
            run(1_000_000, 18);
            run(200_000, 600);
        }
    }
}
