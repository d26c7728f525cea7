mod common;

use common::*;
use lianqin_hj212::*;

#[test]
fn crc_check_values_from_reference() {
    for (seg, std_crc, modbus_crc) in crc_vectors() {
        assert_eq!(crc16_hj212(seg.as_bytes()), std_crc, "HJ212 CRC of {seg}");
        assert_eq!(crc16_modbus(seg.as_bytes()), modbus_crc, "Modbus CRC of {seg}");
        assert_eq!(CrcVariant::Hj212.compute(seg.as_bytes()), std_crc);
        assert_eq!(CrcVariant::Modbus.compute(seg.as_bytes()), modbus_crc);
    }
    assert_eq!(SEG_2005.len(), 139);
    assert_eq!(SEG_2025.len(), 87);
}

#[test]
fn modbus_matches_crc_crate_catalogue() {
    // Independent implementation: the `crc` crate's CRC-16/MODBUS.
    let reference = ::crc::Crc::<u16>::new(&::crc::CRC_16_MODBUS);
    assert_eq!(crc16_modbus(b"123456789"), 0x4B37); // catalogue check value
    for (seg, _, _) in crc_vectors() {
        assert_eq!(crc16_modbus(seg.as_bytes()), reference.checksum(seg.as_bytes()));
    }
}

#[test]
fn example_frames_parse_and_verify() {
    for ex in EXAMPLES {
        let f = parse_frame_strict(ex.as_bytes(), CrcVariant::Hj212).unwrap_or_else(|e| panic!("{ex}: {e}"));
        assert!(f.crc_ok);
        assert_eq!(f.raw, &ex[6..ex.len() - 6]);
        assert_eq!(f.raw.len(), ex[2..6].parse::<usize>().unwrap());
    }
}

#[test]
fn real_air_frame_fields() {
    let f = parse_frame(REAL_AIR.as_bytes(), CrcVariant::Hj212).unwrap();
    assert_eq!(f.qn.as_deref(), Some("20241115190408000"));
    assert_eq!(f.st, "27");
    assert_eq!(f.cn, "2011");
    assert_eq!(f.pw.as_deref(), Some("123456"));
    assert_eq!(f.mn, "AQI2411132600332");
    assert_eq!(f.flag, Some(Flag { raw: 5 }));
    assert!(f.ack_required());
    assert!(!f.flag.unwrap().subpackage());
    assert_eq!(f.version, ProtocolVersion::V2017);
    assert_eq!(f.pnum, None);
    assert_eq!(f.cp.data_time.unwrap().to_string(), "2024-11-15 19:04:08");
    assert_eq!(f.cp.factors.len(), 15);
    assert_eq!(f.cp.factor("a21026").unwrap().rtd, Some(117.0));
    assert_eq!(f.cp.factor("a01001").unwrap().rtd, Some(28.1));
    // Non-standard codes are kept, not dropped.
    assert_eq!(f.cp.factor("LA").unwrap().rtd, Some(49.0));
    assert_eq!(f.cp.factor("o31104").unwrap().rtd, Some(29.0));
    assert!(f.cp.other.is_empty());
    // Factor order is the wire order.
    assert_eq!(f.cp.factors[0].code, "a21026");
    assert_eq!(f.cp.factors[14].code, "a01008");
}

#[test]
fn minute_frame_fields() {
    let f = parse_frame(MINUTE_WATER.as_bytes(), CrcVariant::Hj212).unwrap();
    assert_eq!(f.cn, "2051");
    let cod = f.cp.factor("w01018").unwrap();
    assert_eq!((cod.min, cod.avg, cod.max), (Some(18.2), Some(21.5), Some(24.9)));
    assert_eq!(cod.rtd, None);
    assert_eq!(cod.flag, Some(DataFlag::Normal));
    let flow = f.cp.factor("w00000").unwrap();
    assert_eq!(flow.cou, Some(12.6));
    assert_eq!(flow.flag, Some(DataFlag::Normal));
}

#[test]
fn surface_water_frame_no_reply() {
    let f = parse_frame(SURFACE_WATER.as_bytes(), CrcVariant::Hj212).unwrap();
    assert_eq!(f.flag, Some(Flag { raw: 4 }));
    assert!(!f.ack_required());
    assert!(!needs_data_ack(&f));
    assert_eq!(f.version, ProtocolVersion::V2017);
    assert_eq!(f.cp.factor("w21011").unwrap().rtd, Some(0.112));
}

#[test]
fn data_ack_frame_is_what_we_build() {
    // Frame 4 in the reference is the 9014 ack of frame 2.
    let req = parse_frame(MINUTE_WATER.as_bytes(), CrcVariant::Hj212).unwrap();
    assert!(needs_data_ack(&req));
    let ack = build_data_ack(&req).encode(CrcVariant::Hj212).unwrap();
    assert_eq!(String::from_utf8(ack).unwrap(), DATA_ACK);
    let parsed = parse_frame(DATA_ACK.as_bytes(), CrcVariant::Hj212).unwrap();
    assert!(parsed.cp.factors.is_empty() && parsed.cp.other.is_empty());
    // Replies never get replies.
    let mut f = parsed.clone();
    f.flag = Some(Flag { raw: 5 });
    assert!(!needs_data_ack(&f));
}

#[test]
fn qn_rtn_and_other_replies() {
    let req = parse_frame(REAL_AIR.as_bytes(), CrcVariant::Hj212).unwrap();
    let nak = build_qn_rtn(&req, QnRtn::CrcError);
    let seg = nak.data_segment();
    assert_eq!(seg, "QN=20241115190408000;ST=91;CN=9011;PW=123456;MN=AQI2411132600332;Flag=4;CP=&&QnRtn=9&&");
    let bytes = nak.encode(CrcVariant::Hj212).unwrap();
    assert_eq!(bytes, wire(&seg, crc16_hj212(seg.as_bytes())));
    assert_eq!(build_exe_rtn(&req, ExeRtn::NoData).cp.other["ExeRtn"], "100");
    assert_eq!(build_notify_ack(&req).cn, "9013");
    // Modbus encoding carries the Modbus CRC.
    let m = nak.encode(CrcVariant::Modbus).unwrap();
    assert_eq!(m, wire(&seg, crc16_modbus(seg.as_bytes())));
    // 2025 request → Flag=8 reply.
    let r25 = parse_frame(&wire(SEG_2025, 0x2200), CrcVariant::Hj212).unwrap();
    assert_eq!(build_data_ack(&r25).flag, Some(Flag { raw: 8 }));
}

#[test]
fn hj212_2005_frame() {
    let f = parse_frame_strict(&wire(SEG_2005, 0x4980), CrcVariant::Hj212).unwrap();
    assert_eq!(f.version, ProtocolVersion::V2005);
    assert_eq!(f.qn, None);
    assert_eq!(f.flag, None);
    assert_eq!(f.mn, "LD130133000015");
    assert_eq!(f.mn.len(), 14);
    // 17-digit DataTime with milliseconds.
    assert_eq!(f.cp.data_time.unwrap().to_string(), "2016-08-24 00:38:17");
    assert_eq!(f.cp.factor("B01").unwrap().rtd, Some(36.91));
    assert_eq!(f.cp.factor("011").unwrap().rtd, Some(231.0));
    assert_eq!(f.cp.factor("060").unwrap().flag, Some(DataFlag::Normal));
    assert_eq!(factor_name("011"), Some("COD"));
}

#[test]
fn hj212_2025_frame() {
    let f = parse_frame_strict(&wire(SEG_2025, 0x2200), CrcVariant::Hj212).unwrap();
    assert_eq!(f.version, ProtocolVersion::V2025);
    assert_eq!(f.flag, Some(Flag { raw: 9 }));
    assert!(f.ack_required());
    assert_eq!(f.mn.len(), 24);
    assert!(f.cp.factors.is_empty());
}

#[test]
fn version_bits() {
    assert_eq!(Flag { raw: 4 }.version(), ProtocolVersion::V2017);
    assert_eq!(Flag { raw: 7 }.version(), ProtocolVersion::V2017);
    assert!(Flag { raw: 7 }.subpackage() && Flag { raw: 7 }.ack_required());
    assert_eq!(Flag { raw: 9 }.version(), ProtocolVersion::V2025);
    assert_eq!(Flag { raw: 1 }.version(), ProtocolVersion::V2005);
    assert_eq!(Flag { raw: 13 }.version(), ProtocolVersion::Unknown(3));
    assert_eq!(Flag::new(ProtocolVersion::V2025, true, false).raw, 9);
    assert_eq!(Flag::new(ProtocolVersion::V2017, true, true).raw, 7);
}

#[test]
fn modbus_variant() {
    for (seg, std_crc, modbus_crc) in crc_vectors() {
        let m = wire(&seg, modbus_crc);
        let f = parse_frame(&m, CrcVariant::Modbus).unwrap();
        assert!(f.crc_ok, "{seg}");
        let wrong = parse_frame(&m, CrcVariant::Hj212).unwrap();
        assert!(!wrong.crc_ok);
        assert_eq!(
            parse_frame_strict(&m, CrcVariant::Hj212).unwrap_err(),
            Hj212Error::BadCrc { expected: std_crc, got: modbus_crc, variant: CrcVariant::Hj212 }
        );
    }
}

#[test]
fn lowercase_crc_accepted() {
    let f = parse_frame(&wire(SEG_2025, 0x2200), CrcVariant::Hj212).unwrap();
    assert!(f.crc_ok);
    let lower = SURFACE_WATER.replace("BB01\r\n", "bb01\r\n");
    assert!(parse_frame(lower.as_bytes(), CrcVariant::Hj212).unwrap().crc_ok);
}

#[test]
fn error_variants_name_what_and_where() {
    let e = parse_frame(b"#X0087", CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::BadHeader { offset: 0, .. }), "{e}");
    let e = parse_frame(b"##00x7QN=1", CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::BadLengthField { offset: 2, .. }), "{e}");
    // Declared 0088, actual 0087.
    let bad_len = DATA_ACK.replacen("##0087", "##0088", 1);
    let e = parse_frame(bad_len.as_bytes(), CrcVariant::Hj212).unwrap_err();
    assert_eq!(e, Hj212Error::BadLength { declared: 88, actual: 87 });
    // Declared 0086: the CRLF is one byte late.
    let bad_len = DATA_ACK.replacen("##0087", "##0086", 1);
    let e = parse_frame(bad_len.as_bytes(), CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::BadTerminator { offset: 96, .. }), "{e}");
    let bad_crc = DATA_ACK.replace("8701\r\n", "87G1\r\n");
    let e = parse_frame(bad_crc.as_bytes(), CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::BadCrcField { offset: 93, .. }), "{e}");
    let e = parse_frame(&DATA_ACK.as_bytes()[..50], CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::Truncated { needed: 99, have: 50 }), "{e}");
    let mut two = DATA_ACK.as_bytes().to_vec();
    two.extend_from_slice(b"xx");
    let e = parse_frame(&two, CrcVariant::Hj212).unwrap_err();
    assert_eq!(e, Hj212Error::TrailingBytes { offset: 99, count: 2 });
    // Missing CN, correct CRC → BadField naming CN.
    let seg = "QN=1;ST=32;PW=1;MN=X;CP=&&&&";
    let e = parse_frame(&wire(seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap_err();
    assert!(matches!(&e, Hj212Error::BadField { field, .. } if field == "CN"), "{e}");
    // Bad Flag, offset of the Flag item.
    let seg = "ST=32;CN=2011;MN=X;Flag=abc;CP=&&&&";
    let e = parse_frame(&wire(seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap_err();
    assert_eq!(
        e,
        Hj212Error::BadField { field: "Flag".into(), offset: 6 + 19, reason: "\"abc\" is not an integer 0-255".into() }
    );
    assert!(e.to_string().contains("Flag") && e.to_string().contains("25"));
    // Unterminated CP.
    let seg = "ST=32;CN=2011;MN=X;CP=&&a-Rtd=1";
    let e = parse_frame(&wire(seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap_err();
    assert!(matches!(&e, Hj212Error::BadField { field, .. } if field == "CP"), "{e}");
    // Garbled segment + wrong CRC → reported as BadCrc.
    let e = parse_frame(&wire("garbage", 0), CrcVariant::Hj212).unwrap_err();
    assert!(matches!(e, Hj212Error::BadCrc { .. }), "{e}");
}

#[test]
fn missing_crlf_tolerated_in_single_frame_parse() {
    let f = parse_frame(&DATA_ACK.as_bytes()[..DATA_ACK.len() - 2], CrcVariant::Hj212).unwrap();
    assert!(f.crc_ok);
}

#[test]
fn cp_grammar_flags_extras_and_typos() {
    let seg = "QN=20250315103000123;ST=31;CN=2061;PW=123456;MN=A1;Flag=4;CP=&&DataTime=20250315100000;BeginTime=20250315090000;\
a21026-Avg=12.5,a21026-ZsAvg=14.1,a21026-Flag=m,a21026-EFlag=A01,a21026-SampleTime=20250315095959123;\
a34013-Rtd=,a34013-Flag=P;e70101-Rtd=3;e71101-Rtd=4;g11901-Rtd=5;g20001-Rtd=6;\
a21002-Rtd=1;a21002-Rtd=2;weird;PolId=w01018;InfoList=&&i1=1;i2=2&&&&";
    let f = parse_frame_strict(&wire(seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap();
    assert_eq!(f.version, ProtocolVersion::V2017);
    let so2 = f.cp.factor("a21026").unwrap();
    assert_eq!(so2.avg, Some(12.5));
    assert_eq!(so2.flag, Some(DataFlag::Maintenance)); // lower-case tolerated
    assert_eq!(so2.extra["ZsAvg"], "14.1");
    assert_eq!(so2.extra["EFlag"], "A01");
    assert_eq!(so2.extra["SampleTime"], "20250315095959123");
    let dust = f.cp.factor("a34013").unwrap();
    assert_eq!(dust.rtd, None);
    assert_eq!(dust.extra["Rtd"], ""); // empty value kept raw
    assert_eq!(dust.flag, Some(DataFlag::Other("P".into())));
    // Both sides of the 2017 typos are accepted as ordinary codes.
    for code in ["e70101", "e71101", "g11901", "g20001"] {
        assert!(f.cp.factor(code).is_some(), "{code}");
        assert!(factor_name(code).is_some(), "{code}");
    }
    // Repeated key kept.
    let nox = f.cp.factor("a21002").unwrap();
    assert_eq!(nox.rtd, Some(1.0));
    assert_eq!(nox.extra["Rtd"], "2");
    assert_eq!(f.cp.other["BeginTime"], "20250315090000");
    assert_eq!(f.cp.other["weird"], "");
    assert_eq!(f.cp.other["PolId"], "w01018");
    // Nested && block is one value, not split on its `;`.
    assert_eq!(f.cp.other["InfoList"], "&&i1=1;i2=2&&");
    for flag in ["N", "F", "M", "S", "D", "C", "T", "B"] {
        assert_eq!(DataFlag::parse(flag).as_str(), flag);
        assert!(!matches!(DataFlag::parse(flag), DataFlag::Other(_)));
    }
}

#[test]
fn encode_roundtrip_of_examples() {
    for ex in EXAMPLES {
        let f = parse_frame(ex.as_bytes(), CrcVariant::Hj212).unwrap();
        let again = parse_frame(&f.encode(CrcVariant::Hj212).unwrap(), CrcVariant::Hj212).unwrap();
        assert!(again.crc_ok);
        assert_eq!(Frame { raw: String::new(), ..again }, Frame { raw: String::new(), ..f });
    }
    assert!(encode_frame(&"x".repeat(10_000), CrcVariant::Hj212).is_err());
}

#[test]
fn json_record_shape() {
    let f = parse_frame(MINUTE_WATER.as_bytes(), CrcVariant::Hj212).unwrap();
    let j = frame_to_json(&f);
    assert_eq!(j["mn"], "33050200000000000000A001");
    assert_eq!(j["cn"], "2051");
    assert_eq!(j["st"], "32");
    assert_eq!(j["qn"], "20250315103000123");
    assert_eq!(j["data_time"], "2025-03-15T10:20:00+08:00");
    assert_eq!(j["version"], "2017");
    assert_eq!(j["flag"], 5);
    assert_eq!(j["crc_ok"], true);
    assert!(j.get("pw").is_none(), "password must not leak into JSON");
    let cod = &j["factors"]["w01018"];
    assert_eq!(cod["min"], 18.2);
    assert_eq!(cod["avg"], 21.5);
    assert_eq!(cod["max"], 24.9);
    assert!(cod["rtd"].is_null());
    assert_eq!(cod["flag"], "N");
    assert_eq!(j["factors"]["w00000"]["cou"], 12.6);
    let f05 = parse_frame(&wire(SEG_2005, 0x4980), CrcVariant::Hj212).unwrap();
    let j = frame_to_json(&f05);
    assert_eq!(j["version"], "2005");
    assert!(j["qn"].is_null());
    assert_eq!(j["data_time"], "2016-08-24T00:38:17+08:00");
}

#[test]
fn warnings_are_informative_not_fatal() {
    let seg = "ST=3;CN=20x1;MN=bad-mn!;Flag=6;CP=&&&&";
    let f = parse_frame_strict(&wire(seg, crc16_hj212(seg.as_bytes())), CrcVariant::Hj212).unwrap();
    let w = f.warnings();
    assert!(w.iter().any(|s| s.contains("MN")));
    assert!(w.iter().any(|s| s.contains("ST")));
    assert!(w.iter().any(|s| s.contains("CN")));
    assert!(w.iter().any(|s| s.contains("PNUM")));
    assert!(parse_frame(MINUTE_WATER.as_bytes(), CrcVariant::Hj212).unwrap().warnings().is_empty());
}
