//! The secrets of `src/auth.rs` (token MACs, minting passwords) are
//! compared with constant-time APIs, and every candidate is tried.
//!
//! Timing cannot be measured reliably in a test, so this reads the source
//! as a syntax tree (syn) and checks what is written there:
//! - `verify` checks MACs with `Mac::verify_slice` in a loop over every
//!   secret that never exits early, and never takes the MAC out
//!   (`finalize`, `into_bytes`) to compare it by hand;
//! - `password_matches` uses `ct_eq` (plain passwords, as SHA-256 digests)
//!   and argon2's `verify_password`;
//! - `check_basic` uses `ct_eq` and `password_matches` in a loop over every
//!   credential that never exits early;
//! - outside the tests, every `==` / `!=` / `.eq()` / `.ne()` in the file
//!   compares only names known to hold no secret (an allow-list: a new
//!   comparison fails this test until someone looks at it).
//!
//! `the_checker_catches_plain_comparisons` feeds it edited copies of
//! auth.rs (a `==` instead of `verify_slice`, a `break` in the loop…) and
//! requires a finding for each, so this test can fail.

use std::collections::BTreeSet;

use syn::visit::Visit;

/// Identifiers a comparison may involve: the IP check of a token, and the
/// format names of a token's scope (public: config names, also in URLs).
const NOT_SECRET: &[&str] = &["canonical", "ip", "peer", "scoped", "format"];

#[derive(Default)]
struct Body {
    /// Names of the methods and functions called.
    calls: BTreeSet<String>,
    /// Every `==`, `!=`, `.eq()`, `.ne()`: its text and the identifiers in it.
    comparisons: Vec<(String, BTreeSet<String>)>,
    /// Loops: (calls inside, has an early exit: `break`, `return` or `?`).
    loops: Vec<(BTreeSet<String>, bool)>,
}

#[derive(Default)]
struct Idents(BTreeSet<String>);

impl<'a> Visit<'a> for Idents {
    fn visit_ident(&mut self, i: &'a syn::Ident) {
        self.0.insert(i.to_string());
    }
}

fn idents(e: &syn::Expr) -> BTreeSet<String> {
    let mut v = Idents::default();
    v.visit_expr(e);
    v.0
}

/// A short description of an expression: its identifiers.
fn text(e: &syn::Expr) -> String {
    idents(e).into_iter().collect::<Vec<_>>().join(" ")
}

impl<'a> Visit<'a> for Body {
    fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
        let name = m.method.to_string();
        if name == "eq" || name == "ne" {
            let mut ids = idents(&m.receiver);
            for a in &m.args {
                ids.extend(idents(a));
            }
            self.comparisons
                .push((format!(".{name}() on {}", text(&m.receiver)), ids));
        }
        self.calls.insert(name);
        syn::visit::visit_expr_method_call(self, m);
    }

    fn visit_expr_call(&mut self, c: &'a syn::ExprCall) {
        if let syn::Expr::Path(p) = &*c.func {
            if let Some(last) = p.path.segments.last() {
                self.calls.insert(last.ident.to_string());
            }
        }
        syn::visit::visit_expr_call(self, c);
    }

    fn visit_expr_binary(&mut self, b: &'a syn::ExprBinary) {
        if matches!(b.op, syn::BinOp::Eq(_) | syn::BinOp::Ne(_)) {
            let mut ids = idents(&b.left);
            ids.extend(idents(&b.right));
            self.comparisons
                .push((format!("{} ==/!= {}", text(&b.left), text(&b.right)), ids));
        }
        syn::visit::visit_expr_binary(self, b);
    }

    fn visit_expr_for_loop(&mut self, l: &'a syn::ExprForLoop) {
        let mut inner = Body::default();
        inner.visit_block(&l.body);
        let mut exits = Exits(false);
        exits.visit_block(&l.body);
        self.loops.push((inner.calls.clone(), exits.0));
        syn::visit::visit_expr_for_loop(self, l);
    }
}

/// Whether a block has `break`, `return` or `?`.
struct Exits(bool);

impl<'a> Visit<'a> for Exits {
    fn visit_expr_break(&mut self, _: &'a syn::ExprBreak) {
        self.0 = true;
    }
    fn visit_expr_return(&mut self, _: &'a syn::ExprReturn) {
        self.0 = true;
    }
    fn visit_expr_try(&mut self, t: &'a syn::ExprTry) {
        self.0 = true;
        syn::visit::visit_expr_try(self, t);
    }
    fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {
        // A `return` in a closure does not leave the loop.
    }
}

fn is_test_module(item: &syn::Item) -> bool {
    match item {
        syn::Item::Mod(m) => m.attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.meta
                    .require_list()
                    .is_ok_and(|l| l.tokens.to_string() == "test")
        }),
        _ => false,
    }
}

/// Every problem found in the source of auth.rs.
fn check(source: &str) -> Vec<String> {
    check_file(source, NOT_SECRET, |require| {
        require(
            "verify",
            &["verify_slice"],
            Some("verify_slice"),
            &["finalize", "into_bytes", "finalize_reset"],
        );
        require("password_matches", &["ct_eq", "verify_password"], None, &[]);
        require(
            "check_basic",
            &["ct_eq", "password_matches"],
            Some("password_matches"),
            &[],
        );
    })
}

/// A check of one function: (name, calls it must make, the call that must
/// sit in a loop that never exits early, calls it must not make).
type Require<'a> = dyn FnMut(&str, &[&str], Option<&str>, &[&str]) + 'a;

/// Every problem found in `source`: comparisons involving a name not in
/// `not_secret`, and what `requirements` asks of its functions.
fn check_file(
    source: &str,
    not_secret: &[&str],
    requirements: impl FnOnce(&mut Require<'_>),
) -> Vec<String> {
    let file = syn::parse_file(source).expect("the source parses");
    let mut problems = Vec::new();
    let mut fns = std::collections::HashMap::new();
    for item in &file.items {
        if is_test_module(item) {
            continue;
        }
        let mut body = Body::default();
        body.visit_item(item);
        for (what, ids) in &body.comparisons {
            let secretish: Vec<&String> = ids
                .iter()
                .filter(|i| !not_secret.contains(&i.as_str()))
                .collect();
            if !secretish.is_empty() {
                problems.push(format!(
                    "plain comparison `{what}` involves {secretish:?}: use verify_slice / ct_eq"
                ));
            }
        }
        if let syn::Item::Fn(f) = item {
            fns.insert(f.sig.ident.to_string(), body);
        }
    }
    let mut require = |func: &str, needed: &[&str], loop_over: Option<&str>, forbidden: &[&str]| {
        let Some(body) = fns.get(func) else {
            problems.push(format!("fn {func} not found"));
            return;
        };
        for n in needed {
            if !body.calls.contains(*n) {
                problems.push(format!("fn {func} no longer calls {n}"));
            }
        }
        for n in forbidden {
            if body.calls.contains(*n) {
                problems.push(format!(
                    "fn {func} calls {n}: the MAC must not be taken out to be compared by hand"
                ));
            }
        }
        if let Some(call) = loop_over {
            let loops: Vec<&(BTreeSet<String>, bool)> = body
                .loops
                .iter()
                .filter(|(calls, _)| calls.contains(call))
                .collect();
            if loops.is_empty() {
                problems.push(format!(
                    "fn {func}: {call} is not called in a loop over every candidate"
                ));
            }
            if loops.iter().any(|(_, exits)| *exits) {
                problems.push(format!(
                    "fn {func}: the loop calling {call} exits early: every candidate must be tried"
                ));
            }
        }
    };
    requirements(&mut require);
    problems
}

/// The second factor's and the approval requests' secrets (issue 28):
/// a TOTP code is compared with `ct_eq` against every step of the window,
/// a request's MAC with `verify_slice` under every secret. Their other
/// comparisons involve only public names: the code's length, form field
/// names and the request's version.
fn check_policy(totp: &str, approval: &str) -> Vec<String> {
    let mut problems = check_file(
        totp,
        &[
            "given", "len", "DIGITS", "same", "found", "is_none", "step", "used",
        ],
        |require| {
            require("matching_step", &["ct_eq"], Some("ct_eq"), &["eq"]);
        },
    );
    problems.extend(check_file(
        approval,
        &["k", "name", "get", "v"],
        |require| {
            require(
                "open",
                &["verify_slice"],
                Some("verify_slice"),
                &["finalize", "into_bytes", "finalize_reset"],
            );
        },
    ));
    problems
}

fn source(name: &str) -> String {
    std::fs::read_to_string(format!("{}/src/{name}", env!("CARGO_MANIFEST_DIR"))).expect(name)
}

#[test]
fn totp_codes_and_approval_macs_are_compared_in_constant_time() {
    let problems = check_policy(&source("totp.rs"), &source("approval.rs"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And the checker sees a plain comparison or an early exit there.
    let totp = source("totp.rs");
    for (from, to) in [
        ("bool::from(expected[..].ct_eq(given))", "expected[..] == *given"),
        ("if same && found.is_none() {", "if same {\n            return Some(step);\n        }\n        if same && found.is_none() {"),
    ] {
        assert_eq!(totp.matches(from).count(), 1, "totp.rs changed: update this mutation: {from}");
        let mutated = totp.replacen(from, to, 1);
        assert!(!check_policy(&mutated, &source("approval.rs")).is_empty(), "the checker missed: {to}");
    }
    let approval = source("approval.rs");
    let from = "ok |= m.verify_slice(&given).is_ok();";
    assert_eq!(approval.matches(from).count(), 1, "approval.rs changed");
    let mutated = approval.replacen(
        from,
        "ok |= m.finalize().into_bytes().as_slice() == given.as_slice();",
        1,
    );
    assert!(
        !check_policy(&totp, &mutated).is_empty(),
        "the checker missed a MAC compared with =="
    );
}

fn auth_rs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth.rs"))
        .expect("src/auth.rs")
}

#[test]
fn secrets_are_compared_in_constant_time() {
    let problems = check(&auth_rs());
    assert!(problems.is_empty(), "src/auth.rs:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_catches_plain_comparisons() {
    let source = auth_rs();
    let mutations: &[(&str, &str)] = &[
        // The MAC compared with `==`.
        ("ok |= m.verify_slice(&given).is_ok();", "ok |= m.finalize().into_bytes().as_slice() == given.as_slice();"),
        // …or with `.eq()`.
        ("ok |= m.verify_slice(&given).is_ok();", "ok |= given.eq(&m.finalize().into_bytes().to_vec());"),
        // Stopping at the first secret that matches.
        ("ok |= m.verify_slice(&given).is_ok();", "ok |= m.verify_slice(&given).is_ok();\n        if ok { break; }"),
        // A plain password compared with `==`.
        (
            "bool::from(Sha256::digest(stored.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())))",
            "stored == given",
        ),
        // The user name compared with `==`.
        ("let u = bool::from(Sha256::digest(c.user.as_bytes()).ct_eq(&user_d));", "let u = c.user.as_bytes() == user.as_bytes();"),
        // Stopping at the first credential that matches.
        ("if u & p && found.is_none() {", "if u & p {\n            return Some(c.user.clone());\n        }\n        if u & p && found.is_none() {"),
    ];
    for (from, to) in mutations {
        assert_eq!(
            source.matches(from).count(),
            1,
            "auth.rs changed: update this mutation: {from}"
        );
        let mutated = source.replacen(from, to, 1);
        let problems = check(&mutated);
        assert!(!problems.is_empty(), "the checker missed: {to}");
    }
}
