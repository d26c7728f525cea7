//! Properties of sealed values: every value opens to itself under its own
//! context, and to nothing else — not under another context, not after any
//! one character of the sealed text is changed, not with another KEK.

use lianqin_seal::{Keyring, SealError};
use proptest::prelude::*;

fn ring(dir: &std::path::Path) -> Keyring {
    Keyring::open(dir.join("k"), [42; 32]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sealed_values_open_only_as_sealed(
        plain in "\\PC{0,80}",
        ctx in "[a-z_]{1,12}\\.[a-z_]{1,12}",
        other in "[a-z_]{1,12}\\.[a-z_]{1,12}",
        dept in "[a-z][a-z0-9_-]{0,10}",
        flip in any::<prop::sample::Index>(),
    ) {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path());
        let v = r.seal_text(&dept, &ctx, &plain).unwrap();
        let prefix = format!("lqe1:{dept}.1:");
        prop_assert!(v.starts_with(&prefix));
        if plain.chars().count() >= 4 {
            prop_assert!(!v.contains(&plain));
        }
        prop_assert_eq!(r.open_text(&ctx, &v).unwrap(), plain.as_str());
        if other != ctx {
            let wrong_context = matches!(r.open_text(&other, &v), Err(SealError::Tampered { .. }));
            prop_assert!(wrong_context);
        }
        // Change one character of the body: it never opens.
        let body_start = v.rfind(':').unwrap() + 1;
        let i = body_start + flip.index(v.len() - body_start);
        let c = v.as_bytes()[i];
        let swapped = if c == b'A' { 'B' } else { 'A' };
        let mut t = v.clone();
        t.replace_range(i..i + 1, &swapped.to_string());
        // base64url without padding: the last character may carry unused bits.
        if i + 1 < v.len() {
            prop_assert!(r.open_text(&ctx, &t).is_err());
        }
        // Another key-encryption key cannot read the key folder.
        prop_assert!(Keyring::open(d.path().join("k"), [43; 32]).is_err());
    }

    #[test]
    fn blobs_open_only_as_sealed(plain in prop::collection::vec(any::<u8>(), 0..300), flip in any::<prop::sample::Index>()) {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path());
        let b = r.seal_blob("_bus", "bus", &plain).unwrap();
        prop_assert_eq!(&*r.open_blob("bus", &b).unwrap(), plain.as_slice());
        prop_assert!(r.open_blob("other", &b).is_err());
        let mut t = b.clone();
        let i = 4 + flip.index(t.len() - 4);
        t[i] ^= 0x01;
        prop_assert!(r.open_blob("bus", &t).is_err());
    }
}
