//! Prints the demo's joint-matter truth as CSV (`matter_id,incident`) for
//! `lianqin demo --scale N` (records per source ≈ 300 × N), to score a
//! demo's `matter_group` at another scale than the tests' (BENCHMARKS.md):
//!
//! ```sh
//! cargo run -p lianqin-sim --example joint_truth -- 3 > truth.csv
//! ```

fn main() {
    let scale: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let cfg = lianqin_sim::SimConfig::scaled(scale);
    println!("matter_id,incident");
    for (m, i) in lianqin_sim::joint_matters(&cfg) {
        println!("{m},{i}");
    }
}
