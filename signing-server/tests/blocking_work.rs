//! CPU-heavy work stays off the async workers (issue 25 item 8): argon2
//! password checks ran on them, so a burst of wrong minting passwords held
//! `/health` for seconds. Timing cannot be asserted reliably, so this reads
//! `src/http/mint.rs` and fails if `check_basic` (argon2) is called anywhere
//! but inside the closure handed to `spawn_blocking`.

/// The calls of `name(` in `source` that are not inside the parentheses of
/// a `spawn_blocking(…)` call (comments stripped first).
fn calls_outside_spawn_blocking(source: &str, name: &str) -> Vec<usize> {
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    // Byte ranges covered by `spawn_blocking( … )`.
    let mut inside = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("spawn_blocking(") {
        let open = from + i + "spawn_blocking".len();
        let mut depth = 0usize;
        let mut end = code.len();
        for (j, c) in code[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        inside.push(open..end);
        from = end.max(open + 1);
    }
    let needle = format!("{name}(");
    code.match_indices(&needle)
        .map(|(at, _)| at)
        .filter(|at| !code[..*at].ends_with("fn "))
        .filter(|at| !inside.iter().any(|r| r.contains(at)))
        .collect()
}

fn mint_rs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mint.rs"))
        .expect("src/http/mint.rs")
}

#[test]
fn password_checks_run_on_blocking_threads() {
    let source = mint_rs();
    assert!(
        source.contains("check_basic("),
        "mint.rs no longer checks passwords with check_basic: update this test"
    );
    let outside = calls_outside_spawn_blocking(&source, "check_basic");
    assert!(
        outside.is_empty(),
        "check_basic (argon2) called on an async worker at byte(s) {outside:?} of mint.rs"
    );
}

#[test]
fn the_checker_catches_a_direct_call() {
    let direct = "async fn f() { let user = auth::check_basic(authz, &creds); }";
    assert_eq!(calls_outside_spawn_blocking(direct, "check_basic").len(), 1);
    let moved = "async fn f() { let u = tokio::task::spawn_blocking(move || { auth::check_basic(a, &c) }).await; }";
    assert!(calls_outside_spawn_blocking(moved, "check_basic").is_empty());
    let after = "async fn f() { spawn_blocking(|| g()); auth::check_basic(a, &c); }";
    assert_eq!(calls_outside_spawn_blocking(after, "check_basic").len(), 1);
}
