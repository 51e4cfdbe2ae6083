//! The binary XML reader on manifests we build, and hostile variants.

use super::*;

#[test]
fn minimal_manifests_round_trip() {
    for min in [1, 9, 14, 17, 18, 21, 24, 28, 33, 10_000] {
        let r = sdk_range(&minimal(min)).unwrap();
        assert_eq!(r, SdkRange { min, max: None }, "{min}");
    }
    // minSdkVersion="0" or negative: the default, 1.
    assert_eq!(sdk_range(&minimal(0)).unwrap().min, 1);
    assert_eq!(sdk_range(&minimal(u32::MAX)).unwrap().min, 1);
}

#[test]
fn codenames_map_as_apksigner_maps_them() {
    for (name, level) in [
        ("A", 1),
        ("B", 1),
        ("C", 2),
        ("Froyo", 7),
        ("K", 18),
        ("N", 23),
        ("O", 25),
        ("P", 26),
        ("Q", 27),
        ("Z", 36),
    ] {
        assert_eq!(codename_level(name), Some(level), "{name}");
    }
    for name in ["", "a", "1", "éclair"] {
        assert_eq!(codename_level(name), None, "{name}");
    }
}

#[test]
fn not_xml_is_rejected() {
    for junk in [&b""[..], b"PK\x03\x04", &[0u8; 64], b"<manifest/>"] {
        match sdk_range(junk) {
            Err(SignError::Rejected(why)) => assert!(why.contains("AndroidManifest"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

/// No prefix and no single-byte change of a manifest panics or loops; each
/// gives a range or a rejection.
#[test]
fn mutations_never_panic() {
    let good = minimal(21);
    for n in 0..good.len() {
        let _ = sdk_range(&good[..n]);
    }
    for at in 0..good.len() {
        for v in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut m = good.clone();
            m[at] = v;
            match sdk_range(&m) {
                Ok(r) => assert!(r.min >= 1),
                Err(SignError::Rejected(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
