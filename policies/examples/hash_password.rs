//! Print an argon2id hash for users.toml.
//!
//! `cargo run -p lianqin-policies --example hash_password -- 'the password'`

fn main() {
    let Some(pw) = std::env::args().nth(1) else {
        eprintln!("usage: hash_password <password>");
        std::process::exit(2);
    };
    match lianqin_policies::hash_password(&pw) {
        Ok(h) => println!("{h}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
