//! Run the simulated sources until Ctrl-C, for poking at them with curl:
//!
//! ```sh
//! cargo run -p lianqin-sim --example serve -- /tmp/lianqin-drop
//! curl -H 'X-API-Key: demo-key' "$URL/api/110/incidents?page=1&page_size=2"
//! ```

use lianqin_sim::{SimConfig, start};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("lianqin-drop"));
    let sim = start(SimConfig::default(), &dir).await?;
    println!("110            {}/api/110/incidents", sim.police_110);
    println!("12345          {}/api/12345/tickets", sim.hotline_12345);
    println!("market         {}/api/market/enterprises", sim.market);
    println!("law enforcement {}/api/zhzf/cases", sim.law_enforcement);
    println!("env drop dir   {}", sim.env_drop_dir.display());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
