mod common;

use std::time::{Duration, Instant};

use common::*;
use lianqin_hj212::*;

type Item = Result<Frame, Hj212Error>;

fn all_at_once(bytes: &[u8]) -> (Vec<Item>, Vec<Hj212Error>) {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let items = d.decode(bytes);
    (items, d.finish())
}

fn byte_by_byte(bytes: &[u8]) -> (Vec<Item>, Vec<Hj212Error>) {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let mut items = Vec::new();
    for b in bytes {
        items.extend(d.decode(std::slice::from_ref(b)));
        assert!(d.buffered() <= MAX_DATA_LEN + 12);
    }
    (items, d.finish())
}

fn chunked(bytes: &[u8], n: usize) -> (Vec<Item>, Vec<Hj212Error>) {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let mut items = Vec::new();
    for c in bytes.chunks(n) {
        items.extend(d.decode(c));
    }
    (items, d.finish())
}

fn stream_of_examples() -> Vec<u8> {
    EXAMPLES.concat().into_bytes()
}

#[test]
fn sticky_stream_all_at_once() {
    let (items, rest) = all_at_once(&stream_of_examples());
    assert!(rest.is_empty());
    assert_eq!(items.len(), 4);
    for (item, ex) in items.iter().zip(EXAMPLES) {
        let f = item.as_ref().unwrap();
        assert!(f.crc_ok);
        assert_eq!(f.raw, &ex[6..ex.len() - 6]);
    }
}

#[test]
fn split_stream_byte_by_byte_and_chunks_give_same_frames() {
    let s = stream_of_examples();
    let whole = all_at_once(&s);
    assert_eq!(byte_by_byte(&s), whole);
    for n in [2, 3, 7, 64, 100, 313, 1000] {
        assert_eq!(chunked(&s, n), whole, "chunk {n}");
    }
}

#[test]
fn garbage_resync() {
    let mut s = Vec::new();
    s.extend_from_slice(b"\x00\xffnoise#");
    s.extend_from_slice(REAL_AIR.as_bytes());
    s.extend_from_slice(b"##12"); // broken header (non-digit follows)
    s.extend_from_slice(b"ab\r\n");
    s.extend_from_slice(b"###"); // stray hashes right before a frame
    s.extend_from_slice(MINUTE_WATER.as_bytes());
    s.extend_from_slice(b"##0300QN=short frame, CRLF too early\r\n");
    s.extend_from_slice(SURFACE_WATER.as_bytes());
    s.extend_from_slice(b"trailing junk");
    let whole = all_at_once(&s);
    assert_eq!(byte_by_byte(&s), whole);
    let (items, rest) = whole;
    let frames: Vec<&Frame> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.crc_ok));
    assert_eq!(frames[0].mn, "AQI2411132600332");
    assert_eq!(frames[1].cn, "2051");
    assert_eq!(frames[2].st, "21");
    let errors: Vec<&Hj212Error> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    // "\x00\xffnoise" (7 bytes); its trailing `#` pairs with the frame's first `#`.
    assert!(matches!(errors[0], Hj212Error::Garbage { bytes: 7 }), "{errors:?}");
    assert!(errors.iter().any(|e| matches!(e, Hj212Error::BadLengthField { .. })));
    assert!(errors.iter().any(|e| matches!(e, Hj212Error::BadLength { declared: 300, .. })));
    assert_eq!(rest, vec![Hj212Error::Garbage { bytes: 13 }]);
}

#[test]
fn oversize_declared_length_rejected_and_buffer_bounded() {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, 512);
    let items = d.decode(b"##0600QN=");
    assert!(matches!(items[0], Err(Hj212Error::TooLarge { declared: 600, max: 512 })));
    // Endless garbage never accumulates.
    for _ in 0..1000 {
        let _ = d.decode(&[b'x'; 1024]);
        assert!(d.buffered() <= 1);
    }
    // An incomplete frame waits, bounded by its declared length.
    let mut d = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let mut items = d.decode(b"##9999");
    for _ in 0..9 {
        items.extend(d.decode(&[b'a'; 1000]));
    }
    assert!(items.is_empty());
    assert!(d.buffered() <= MAX_DATA_LEN + 12);
    items.extend(d.decode(&[b'a'; 2000]));
    assert!(matches!(items[0], Err(Hj212Error::BadTerminator { .. })), "{items:?}");
}

#[test]
fn bad_crc_frame_is_flagged_not_ok() {
    let bad = MINUTE_WATER.replace("3600\r\n", "3601\r\n");
    let (items, _) = all_at_once(bad.as_bytes());
    let f = items[0].as_ref().unwrap();
    assert!(!f.crc_ok);
    // The Modbus decoder sees the reference frames as bad CRC too.
    let mut d = FrameDecoder::new(CrcVariant::Modbus, MAX_DATA_LEN);
    assert!(d.decode(REAL_AIR.as_bytes())[0].as_ref().is_ok_and(|f| !f.crc_ok));
}

#[test]
fn truncated_at_end_of_stream() {
    let s = &REAL_AIR.as_bytes()[..100];
    let (items, rest) = all_at_once(s);
    assert!(items.is_empty());
    assert_eq!(rest, vec![Hj212Error::Truncated { needed: 325, have: 100 }]);
}

// ---- reassembly ----

fn packet(qn: &str, pnum: u32, pno: u32, cp: &str) -> Frame {
    let seg =
        format!("QN={qn};ST=32;CN=2061;PW=123456;MN=33050200000000000000A001;Flag=7;PNUM={pnum};PNO={pno};CP=&&{cp}&&");
    let f = parse_frame(&wire(&seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap();
    assert!(f.crc_ok && f.is_split());
    f
}

#[test]
fn pnum_pno_reassembly_out_of_order() {
    let mut r = Reassembler::new(Duration::from_secs(30), 8);
    let t = Instant::now();
    let p1 = packet("20250315110000001", 3, 1, "DataTime=20250315100000;w01018-Avg=20.1,w01018-Flag=N");
    let p2 = packet("20250315110000001", 3, 2, "DataTime=20250315100000;w21003-Avg=0.5,w21003-Flag=N");
    let p3 = packet("20250315110000001", 3, 3, "DataTime=20250315100000;w00000-Cou=99.5;w01018-Max=30");
    // A frame of another message in between.
    let other = parse_frame(SURFACE_WATER.as_bytes(), CrcVariant::Hj212).unwrap();

    assert_eq!(r.push(p3.clone(), t).unwrap(), Reassembled::Buffered { received: 1, total: 3 });
    assert_eq!(r.push(other.clone(), t).unwrap(), Reassembled::Complete { frame: other, packets: 1 });
    assert_eq!(r.push(p1.clone(), t).unwrap(), Reassembled::Buffered { received: 2, total: 3 });
    // Retransmission of packet 1 does not count twice.
    assert_eq!(r.push(p1.clone(), t).unwrap(), Reassembled::Buffered { received: 2, total: 3 });
    let Reassembled::Complete { frame, packets } = r.push(p2.clone(), t).unwrap() else {
        panic!("not complete");
    };
    assert_eq!(packets, 3);
    assert_eq!(r.pending(), 0);
    assert_eq!(frame.pnum, Some(3));
    assert_eq!(frame.pno, None);
    assert_eq!(frame.qn.as_deref(), Some("20250315110000001"));
    let codes: Vec<&str> = frame.cp.factors.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["w01018", "w21003", "w00000"]);
    let cod = frame.cp.factor("w01018").unwrap();
    assert_eq!((cod.avg, cod.max), (Some(20.1), Some(30.0)));
    assert_eq!(frame.cp.factor("w00000").unwrap().cou, Some(99.5));
    assert_eq!(frame.raw, [p1.raw, p2.raw, p3.raw].join("\n"));
    assert!(frame.crc_ok);
}

#[test]
fn reassembly_timeout_and_overflow_eviction() {
    let mut r = Reassembler::new(Duration::from_secs(10), 2);
    let t0 = Instant::now();
    r.push(packet("20250315110000001", 2, 1, "a-Rtd=1"), t0).unwrap();
    r.push(packet("20250315110000002", 2, 1, "a-Rtd=1"), t0 + Duration::from_secs(1)).unwrap();
    // Third open message evicts the oldest.
    r.push(packet("20250315110000003", 2, 1, "a-Rtd=1"), t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(r.pending(), 2);
    let ev = r.evict_expired(t0 + Duration::from_secs(5));
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].qn.as_str(), ev[0].reason), ("20250315110000001", "overflow"));
    let ev = r.evict_expired(t0 + Duration::from_secs(11));
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].qn.as_str(), ev[0].reason, ev[0].received, ev[0].total), ("20250315110000002", "timeout", 1, 2));
    assert_eq!(r.pending(), 1);
    // The evicted message's late packet starts a new, incomplete message.
    assert_eq!(
        r.push(packet("20250315110000001", 2, 2, "a-Rtd=1"), t0 + Duration::from_secs(12)).unwrap(),
        Reassembled::Buffered { received: 1, total: 2 }
    );
}

#[test]
fn reassembly_rejects_bad_packet_numbers() {
    let mut r = Reassembler::new(Duration::from_secs(10), 2).with_max_packets(10);
    let t = Instant::now();
    assert!(matches!(r.push(packet("1", 3, 0, ""), t), Err(Hj212Error::Reassembly { .. })));
    assert!(matches!(r.push(packet("1", 3, 4, ""), t), Err(Hj212Error::Reassembly { .. })));
    assert!(matches!(r.push(packet("1", 11, 1, ""), t), Err(Hj212Error::Reassembly { .. })));
    let mut f = packet("1", 3, 1, "");
    f.pno = None;
    assert!(matches!(r.push(f, t), Err(Hj212Error::Reassembly { .. })));
    assert_eq!(r.pending(), 0);
}
