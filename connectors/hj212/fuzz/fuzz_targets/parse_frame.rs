#![no_main]
//! Feed arbitrary bytes to every entry point that takes untrusted input:
//! the single-frame parser (both CRC variants), the segment and CP parsers,
//! and the stream decoder (all at once and split at a data-chosen point,
//! which must decode identically). Nothing may panic or fail to progress.

use lianqin_hj212::{
    Cp, CrcVariant, Frame, FrameDecoder, MAX_DATA_LEN, build_data_ack, frame_to_json, parse_frame,
    parse_frame_strict,
};
use libfuzzer_sys::fuzz_target;

fn decode(data: &[u8], cut: usize) -> Vec<String> {
    let mut d = FrameDecoder::new(CrcVariant::Hj212, MAX_DATA_LEN);
    let mut out = Vec::new();
    for part in [&data[..cut], &data[cut..]] {
        d.push(part);
        let mut guard = 0usize;
        while let Some(item) = d.next_frame() {
            guard += 1;
            assert!(guard <= data.len() + 4, "decoder made no progress");
            out.push(format!("{item:?}"));
        }
    }
    out.extend(d.finish().iter().map(|e| format!("{e:?}")));
    out
}

fuzz_target!(|data: &[u8]| {
    for crc in [CrcVariant::Hj212, CrcVariant::Modbus] {
        if let Ok(f) = parse_frame(data, crc) {
            let _ = frame_to_json(&f);
            let _ = f.warnings();
            let _ = f.encode(crc);
            let _ = build_data_ack(&f).encode(crc);
        }
        let _ = parse_frame_strict(data, crc);
    }
    let text = String::from_utf8_lossy(data);
    let _ = Frame::parse_segment(&text);
    let _ = Cp::parse(&text);

    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    assert_eq!(decode(data, 0), decode(data, cut));
});
