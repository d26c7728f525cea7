//! Print the two users.toml lines for a password: the argon2id hash
//! (`password_hash`, CLI logins) and the SCRAM-SHA-256 verifier (`scram`,
//! Postgres wire logins).
//!
//! `cargo run -p lianqin-policies --example hash_password -- 'the password'`

fn main() {
    let Some(pw) = std::env::args().nth(1) else {
        eprintln!("usage: hash_password <password>");
        std::process::exit(2);
    };
    match lianqin_policies::hash_password(&pw) {
        Ok(h) => {
            println!("password_hash = \"{h}\"");
            let v = lianqin_policies::ScramVerifier::generate(&pw, lianqin_policies::SCRAM_MIN_ITERATIONS);
            println!("scram = \"{}\"", v.encode());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
