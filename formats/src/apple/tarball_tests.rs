//! Unit tests of `tarball.rs`: hostile archives built entry by entry.

use super::*;

fn tarball(entries: &[(&str, EntryType, &str)]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let gz = GzEncoder::new(File::create(f.path()).unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        // set_path refuses `..`: write the raw name bytes like a hostile tool.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        match kind {
            EntryType::Symlink | EntryType::Link => {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap();
    f
}

fn unpack_err(entries: &[(&str, EntryType, &str)]) -> String {
    let t = tarball(entries);
    let d = tempfile::tempdir().unwrap();
    match unpack(t.path(), d.path(), &Limits::default()) {
        Err(SignError::Rejected(m)) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const PLIST: (&str, EntryType, &str) =
    ("A.app/Contents/Info.plist", EntryType::Regular, "<plist/>");

#[test]
fn good_bundle_unpacks() {
    let t = tarball(&[
        ("./A.app/", EntryType::Directory, ""),
        PLIST,
        ("A.app/Contents/MacOS/a", EntryType::Regular, "x"),
        ("A.app/Contents/l", EntryType::Symlink, "MacOS/a"),
        (
            "A.app/Contents/h",
            EntryType::Link,
            "A.app/Contents/MacOS/a",
        ),
    ]);
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        unpack(t.path(), d.path(), &Limits::default()).unwrap(),
        "A.app"
    );
    assert_eq!(
        std::fs::read(d.path().join("A.app/Contents/h")).unwrap(),
        b"x"
    );
}

#[test]
fn hostile_entries_are_rejected() {
    assert!(unpack_err(&[PLIST, ("A.app/../../etc/x", EntryType::Regular, "x")]).contains(".."));
    assert!(unpack_err(&[PLIST, ("/A.app/x", EntryType::Regular, "x")]).contains("absolute"));
    assert!(
        unpack_err(&[PLIST, ("A.app/l", EntryType::Symlink, "../../etc/passwd")])
            .contains("outside")
    );
    assert!(
        unpack_err(&[PLIST, ("A.app/l", EntryType::Symlink, "/etc/passwd")]).contains("absolute")
    );
    assert!(unpack_err(&[PLIST, ("A.app/h", EntryType::Link, "etc/passwd")]).contains("outside"));
    assert!(unpack_err(&[PLIST, ("A.app/dev", EntryType::Char, "")]).contains("device"));
    assert!(unpack_err(&[PLIST, ("A.app/dev", EntryType::Block, "")]).contains("device"));
    assert!(unpack_err(&[PLIST, ("A.app/p", EntryType::Fifo, "")]).contains("fifo"));
    assert!(unpack_err(&[PLIST, ("B.app/x", EntryType::Regular, "x")]).contains("one .app"));
    assert!(unpack_err(&[("x", EntryType::Regular, "x")]).contains("NAME.app"));
    assert!(unpack_err(&[PLIST, PLIST]).contains("duplicate"));
    // A symlink inside the bundle may not be used to write elsewhere.
    assert!(unpack_err(&[
        PLIST,
        ("A.app/l", EntryType::Symlink, "Contents"),
        ("A.app/l/x", EntryType::Regular, "x")
    ])
    .contains("symlink"));
    assert!(unpack_err(&[("A.app/x", EntryType::Regular, "x")]).contains("Info.plist"));
}

#[test]
fn limits_are_enforced() {
    let t = tarball(&[PLIST, ("A.app/big", EntryType::Regular, "0123456789")]);
    let d = tempfile::tempdir().unwrap();
    let r = unpack(
        t.path(),
        d.path(),
        &Limits {
            max_entries: 10,
            max_bytes: 12,
            ..Limits::default()
        },
    );
    assert!(matches!(r, Err(SignError::Rejected(m)) if m.contains("bytes")));
    let d = tempfile::tempdir().unwrap();
    let r = unpack(
        t.path(),
        d.path(),
        &Limits {
            max_entries: 1,
            max_bytes: 1000,
            ..Limits::default()
        },
    );
    assert!(matches!(r, Err(SignError::Rejected(m)) if m.contains("entries")));
}

#[test]
fn a_hard_link_costs_its_target_in_both_budgets() {
    let mut entries = vec![PLIST, ("A.app/big", EntryType::Regular, "0123456789")];
    let names: Vec<String> = (0..5).map(|i| format!("A.app/l{i}")).collect();
    for n in &names {
        entries.push((n.as_str(), EntryType::Link, "A.app/big"));
    }
    let t = tarball(&entries);
    let limits = |max_bytes| Limits {
        max_bytes,
        ..Limits::default()
    };
    // 8 + 10 + 5 × 10 bytes.
    let d = tempfile::tempdir().unwrap();
    unpack(t.path(), d.path(), &limits(68)).unwrap();
    let d = tempfile::tempdir().unwrap();
    let r = unpack(t.path(), d.path(), &limits(67));
    assert!(
        matches!(&r, Err(SignError::Rejected(m)) if m.contains("max_unpacked_size")),
        "{r:?}"
    );
    let budget = crate::scratch::ScratchBudget::new(67);
    let d = tempfile::tempdir().unwrap();
    let mut held = Reservation::new(Some(budget.clone()));
    let r = unpack_within(t.path(), d.path(), &limits(1000), &mut held);
    assert!(matches!(r, Err(SignError::Internal(_))), "{r:?}");
    assert!(budget.used() <= 67);
}

#[test]
fn names_too_long_for_a_file_system_are_rejected() {
    for (path, why) in [
        (format!("A.app/{}", "n".repeat(300)), "longer than 255"),
        (format!("A.app/{}", "d/".repeat(600)), "longer than 1024"),
    ] {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = GzEncoder::new(File::create(f.path()).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        // A GNU long name, as tar writes it.
        b.append_data(&mut h, &path, &b"x"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        match unpack(f.path(), d.path(), &Limits::default()) {
            Err(SignError::Rejected(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

#[test]
fn not_gzip_is_rejected() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), b"\x1f\x8bnot really gzip at all").unwrap();
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack(f.path(), d.path(), &Limits::default()),
        Err(SignError::Rejected(_))
    ));
}
