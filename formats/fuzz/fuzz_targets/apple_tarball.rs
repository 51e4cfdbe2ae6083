//! .tar.gz .app bundle unpacking (formats::apple::tarball::unpack) into a temp dir:
//! whatever the archive says, nothing may appear outside the destination and no
//! symlink inside it may point outside. Then apple-codesign reads the bundle as it
//! does before signing (Info.plist, main executable, nested bundles).
#![no_main]
use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

fn walk(root: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let p = entry.path();
        let ft = entry.file_type().expect("file type");
        if ft.is_symlink() {
            if let Ok(real) = std::fs::canonicalize(&p) {
                assert!(real.starts_with(root), "{} points outside: {}", p.display(), real.display());
            }
        } else if ft.is_dir() {
            walk(root, &p);
        }
    }
}

static DEFAULT_PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // A panic inside apple-codesign is caught in production (apple::check::guard);
    // libfuzzer-sys's hook would abort first. Our own assertions still abort.
    DEFAULT_PANIC_HOOK.call_once(|| drop(std::panic::take_hook()));
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("d");
    std::fs::create_dir(&dest).expect("mkdir");
    let _ = formats::fuzzing::apple_tarball(data, &dest);
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("d")], "something was written outside dest");
    let root = std::fs::canonicalize(&dest).expect("canonicalize");
    walk(&root, &root);
});
