//! signtool signs an `.app` directory in place: packed as .tar.gz, signed by a
//! real server (format macapp, type apple), unpacked over the original.

use signing_tests::apple::{app_tarball, apple_opts, rcodesign_verify, untar};
use signing_tests::signtool::{output, signtool_sign};
use signing_tests::*;

#[test]
fn an_app_directory_is_signed_in_place() {
    let s = Server::start(&apple_opts(""));
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("build");
    std::fs::create_dir_all(&work).unwrap();
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    untar(
        &app_tarball(&dir.path().join("fixture"), "Firefox"),
        &unpacked,
    );
    let app = work.join("Firefox.app");
    std::fs::rename(unpacked.join("Firefox.app"), &app).unwrap();
    let exe = app.join("Contents/MacOS/firefox");
    assert!(exe.is_file());
    let (before, _) = rcodesign_verify(&exe);
    assert!(!before, "the fixture must start unsigned");
    let token = dir.path().join("token");
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    let host = format!("macapp:{}", s.url.trim_start_matches("https://"));
    let (code, log) = output(
        signtool_sign(&[host], &token, &dir.path().join("nonce"))
            .args(["-f", "macapp"])
            .arg(&app),
    );
    assert_eq!(code, 0, "{log}\n{}", s.stderr());

    // The bundle in place is signed: the main executable and the nested helper verify.
    for f in [
        exe.clone(),
        app.join("Contents/Library/LaunchServices/helper.app/Contents/MacOS/helper"),
    ] {
        let (ok, out) = rcodesign_verify(&f);
        assert!(ok, "{}: {out}", f.display());
    }
    assert!(
        app.join("Contents/_CodeSignature/CodeResources").is_file(),
        "the bundle's resources are sealed"
    );
    // Layout kept (the symlink stays a symlink), nothing left beside it.
    assert!(
        std::fs::symlink_metadata(app.join("Contents/Resources/firefox-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, vec!["Firefox.app".to_string()]);
    assert!(
        s.audit().contains("\"filename\":\"Firefox.app.tar.gz\""),
        "{}",
        s.audit()
    );
}

#[test]
fn a_refused_bundle_is_left_untouched() {
    // A server without the format: the bundle must stay exactly as it was.
    let s = Server::start(&ServerOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("build");
    std::fs::create_dir_all(&work).unwrap();
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    untar(
        &app_tarball(&dir.path().join("fixture"), "Firefox"),
        &unpacked,
    );
    let app = work.join("Firefox.app");
    std::fs::rename(unpacked.join("Firefox.app"), &app).unwrap();
    let before = files_under(&app)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap_or_default()))
        .collect::<Vec<_>>();
    let token = dir.path().join("token");
    std::fs::write(&token, s.mint("127.0.0.1", 300)).unwrap();
    let host = format!("macapp:{}", s.url.trim_start_matches("https://"));
    let (code, log) = output(
        signtool_sign(&[host], &token, &dir.path().join("nonce"))
            .args(["-f", "macapp"])
            .arg(&app),
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("Firefox.app"),
        "the failure names the bundle: {log}"
    );
    let after = files_under(&app)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap_or_default()))
        .collect::<Vec<_>>();
    assert_eq!(before, after);
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        left,
        vec!["Firefox.app".to_string()],
        "no temp directory left beside the bundle"
    );
}
