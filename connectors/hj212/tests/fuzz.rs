//! Property-based fuzzing: arbitrary bytes and mutated valid frames never
//! panic, the decoder always makes progress, and chunking never changes
//! what it decodes.

mod common;

use common::*;
use lianqin_hj212::*;
use proptest::prelude::*;

type Item = Result<Frame, Hj212Error>;

/// Decode with a hard bound on iterations: the decoder must make progress on
/// every `next_frame` (consume input or ask for more).
fn decode_chunks(bytes: &[u8], cuts: &[usize], max: usize) -> (Vec<Item>, Vec<Hj212Error>) {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, max);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    bounds.push(bytes.len());
    bounds.sort_unstable();
    for end in bounds {
        if end < start {
            continue;
        }
        d.push(&bytes[start..end]);
        start = end;
        let mut guard = 0usize;
        while let Some(item) = d.next_frame() {
            out.push(item);
            guard += 1;
            assert!(guard <= bytes.len() + 4, "decoder does not make progress");
        }
        assert!(d.buffered() <= max.min(MAX_DATA_LEN) + 12 + bytes.len());
    }
    let rest = d.finish();
    (out, rest)
}

fn exercise(bytes: &[u8]) {
    for crc in [CrcVariant::Hj212, CrcVariant::Modbus] {
        if let Ok(f) = parse_frame(bytes, crc) {
            let _ = frame_to_json(&f);
            let _ = f.warnings();
            let _ = build_data_ack(&f).encode(crc);
            let _ = f.encode(crc);
        }
        let _ = parse_frame_strict(bytes, crc);
    }
    let _ = Frame::parse_segment(&String::from_utf8_lossy(bytes));
    let _ = Cp::parse(&String::from_utf8_lossy(bytes));
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::sample::select(b"#;,=&-\r\n0123456789ABCDEF".to_vec()))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = v.len().max(1);
        match *m {
            Mutation::Flip(i, b) => {
                if !v.is_empty() {
                    v[i % n] = b;
                }
            }
            Mutation::Insert(i, b) => v.insert(i % (v.len() + 1), b),
            Mutation::Delete(i) => {
                if !v.is_empty() {
                    v.remove(i % n);
                }
            }
            Mutation::Truncate(i) => v.truncate(i % (v.len() + 1)),
            Mutation::Duplicate(i, len) => {
                let s = i % (v.len() + 1);
                let e = (s + len).min(v.len());
                let copy = v[s..e].to_vec();
                v.splice(s..s, copy);
            }
        }
    }
    v
}

fn example() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(EXAMPLES.to_vec()).prop_map(|s| s.as_bytes().to_vec())
}

const FLAGS: &[u8] = b"NFMSDCTB";

#[derive(Debug, Clone)]
struct GenFactor {
    code: String,
    rtd: Option<f64>,
    avg: Option<f64>,
    cou: Option<f64>,
    flag: Option<u8>,
}

fn gen_factor() -> impl Strategy<Value = GenFactor> {
    (
        prop_oneof!["[a-z][0-9]{5}", "[A-Z]{2}", "[0-9]{3}"],
        prop::option::of(-1e9f64..1e9),
        prop::option::of(-1e9f64..1e9),
        prop::option::of(0f64..1e12),
        prop::option::of(prop::sample::select(FLAGS.to_vec())),
    )
        .prop_map(|(code, rtd, avg, cou, flag)| GenFactor { code, rtd, avg, cou, flag })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048),
                                   cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        exercise(&bytes);
        let whole = decode_chunks(&bytes, &[], MAX_DATA_LEN);
        prop_assert_eq!(decode_chunks(&bytes, &cuts, MAX_DATA_LEN), whole);
    }

    #[test]
    fn hash_heavy_bytes_never_panic(bytes in prop::collection::vec(
        prop::sample::select(b"##0123456789\r\n;=&,CPQNSTMF".to_vec()), 0..1024),
        cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        exercise(&bytes);
        let whole = decode_chunks(&bytes, &[], 64);
        prop_assert_eq!(decode_chunks(&bytes, &cuts, 64), whole);
    }

    #[test]
    fn mutated_frames_never_panic(frames in prop::collection::vec(example(), 1..4),
                                  ms in prop::collection::vec(mutation(), 0..6),
                                  cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let bytes = apply(frames.concat(), &ms);
        exercise(&bytes);
        let whole = decode_chunks(&bytes, &[], MAX_DATA_LEN);
        prop_assert_eq!(&decode_chunks(&bytes, &cuts, MAX_DATA_LEN), &whole);
        // A frame reported with crc_ok really verifies.
        for f in whole.0.iter().flatten().filter(|f| f.crc_ok) {
            prop_assert!(parse_frame_strict(&encode_frame(&f.raw, CrcVariant::Hj212).unwrap(), CrcVariant::Hj212).is_ok());
        }
        if ms.is_empty() {
            prop_assert_eq!(whole.0.iter().filter(|i| i.as_ref().is_ok_and(|f| f.crc_ok)).count(), frames.len());
        }
    }

    #[test]
    fn any_segment_with_valid_crc_never_panics(seg in "[ -~]{0,300}") {
        let bytes = encode_frame(&seg, CrcVariant::Hj212).unwrap();
        match parse_frame(&bytes, CrcVariant::Hj212) {
            Ok(f) => { prop_assert!(f.crc_ok); prop_assert_eq!(f.raw, seg); }
            Err(e) => prop_assert!(matches!(e, Hj212Error::BadField { .. }), "{}", e),
        }
    }

    #[test]
    fn structured_frames_round_trip(
        qn in prop::option::of("[0-9]{17}"),
        st in "[0-9]{2}", cn in "[0-9]{4}",
        pw in prop::option::of("[0-9a-zA-Z]{1,8}"),
        mn in "[0-9A-Z]{1,24}",
        flag in prop::option::of(any::<u8>()),
        factors in prop::collection::vec(gen_factor(), 0..12),
    ) {
        let mut f = Frame::new(st.clone(), cn.clone(), mn.clone());
        f.qn = qn.clone();
        f.pw = pw.clone();
        f.flag = flag.map(|raw| Flag { raw });
        let mut seen = std::collections::HashSet::new();
        let mut segs = Vec::new();
        for g in &factors {
            if !seen.insert(g.code.clone()) { continue; }
            let mut items = Vec::new();
            if let Some(v) = g.rtd { items.push(format!("{}-Rtd={v}", g.code)); }
            if let Some(v) = g.avg { items.push(format!("{}-Avg={v}", g.code)); }
            if let Some(v) = g.cou { items.push(format!("{}-Cou={v}", g.code)); }
            if let Some(c) = g.flag { items.push(format!("{}-Flag={}", g.code, c as char)); }
            if !items.is_empty() { segs.push(items.join(",")); }
        }
        f.cp = Cp::parse(&format!("DataTime=20250315102000;{}", segs.join(";")));
        let wire1 = f.encode(CrcVariant::Hj212).unwrap();
        let p = parse_frame_strict(&wire1, CrcVariant::Hj212).unwrap();
        prop_assert_eq!(&p.qn, &qn);
        prop_assert_eq!(&p.st, &st);
        prop_assert_eq!(&p.cn, &cn);
        prop_assert_eq!(&p.pw, &pw);
        prop_assert_eq!(&p.mn, &mn);
        prop_assert_eq!(p.flag.map(|x| x.raw), flag);
        if let Some(raw) = flag { prop_assert_eq!(p.version, ProtocolVersion::from_bits(raw >> 2)); }
        // Each code's values come from its first (kept) occurrence.
        let mut checked = std::collections::HashSet::new();
        for g in factors.iter().filter(|g| checked.insert(g.code.clone())) {
            let has_any = g.rtd.is_some() || g.avg.is_some() || g.cou.is_some() || g.flag.is_some();
            prop_assert_eq!(p.cp.factor(&g.code).is_some(), has_any);
            let Some(pf) = p.cp.factor(&g.code) else { continue };
            prop_assert_eq!(pf.rtd, g.rtd);
            prop_assert_eq!(pf.avg, g.avg);
            prop_assert_eq!(pf.cou, g.cou);
            prop_assert_eq!(pf.flag.as_ref().map(|x| x.as_str().to_string()), g.flag.map(|c| (c as char).to_string()));
        }
        // Encoding is a fixed point after one parse.
        let wire2 = p.encode(CrcVariant::Hj212).unwrap();
        prop_assert_eq!(&wire1, &wire2);
        // Modbus encoding parses under Modbus only.
        let m = p.encode(CrcVariant::Modbus).unwrap();
        prop_assert!(parse_frame(&m, CrcVariant::Modbus).unwrap().crc_ok);
    }

    #[test]
    fn crc_properties(data in prop::collection::vec(any::<u8>(), 1..512)) {
        // For non-empty input the standard CRC's low byte is one of eight
        // values (domain.md §1.6); empty input leaves the initial 0xFFFF.
        let lo = crc16_hj212(&data) & 0xFF;
        prop_assert!([0x00, 0x01, 0x40, 0x41, 0x80, 0x81, 0xC0, 0xC1].contains(&lo));
        let reference = ::crc::Crc::<u16>::new(&::crc::CRC_16_MODBUS);
        prop_assert_eq!(crc16_modbus(&data), reference.checksum(&data));
    }
}
