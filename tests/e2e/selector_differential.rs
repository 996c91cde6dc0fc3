//! Differential test: `calico::selector` against Calico's own Go implementation.
//!
//! Builds the oracle `tests/calico/cmd/selector-oracle` (a thin wrapper around Calico
//! v3.31.0's `libcalico-go/lib/selector`) with the test control plane's Calico programs, feeds it thousands of deterministic
//! pseudo-random selectors and label sets in one process invocation, and requires the Rust
//! implementation to agree on parse success, canonical form and match result for every case.

#![allow(clippy::print_stdout)] // The case and agreement counts are part of the report.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kubectl_calico_harden::calico::selector::parse;
use serde_json::{Value, json};

/// Selectors generated; each is evaluated against `LABEL_SETS_PER_SELECTOR` label sets.
const SELECTORS: usize = 6_000;
const LABEL_SETS_PER_SELECTOR: usize = 2;
const SEED: u64 = 0x5e1e_c70a_ca11_c0de;

/// splitmix64: small, deterministic, good enough for case generation.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct`%.
    fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    fn pick_str(&mut self, xs: &[&'static str]) -> &'static str {
        xs[self.below(xs.len())]
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Label keys: ordinary ones, ones with every allowed punctuation character, and words that
/// the tokenizer treats specially in other positions.
const KEYS: &[&str] = &[
    "a",
    "b",
    "app",
    "tier",
    "k8s.io/name",
    "x-y_z.1",
    "in",
    "has",
    "all",
    "global",
    "contains",
    "not",
    "starts",
    "ends",
    "9",
    "-",
];

/// Label values and string-literal contents, small so that matches are frequent; includes the
/// empty string, both quote characters and selector punctuation.
const VALUES: &[&str] = &[
    "",
    "x",
    "y",
    "web",
    "db",
    "front",
    "frontend",
    "end",
    "a b",
    "it's",
    "say \"hi\"",
    "ünï",
    "x,y",
    "()",
    "&& ||",
    "in",
];

/// Fragments inserted by the malformation step.
const JUNK: &[&str] = &[
    "(", ")", "!", "&", "|", "&&", "||", "=", "==", "!=", "\"", "'", "{", "}", ",", "%", "\n",
    "\u{b}", " ", "\t", "in", "not", "has(", "all(", "global(", "a", "ä", "$", "contains", "with",
];

/// Hand-picked corner cases, evaluated in addition to the generated ones.
fn corner_cases() -> Vec<String> {
    let long = "k".repeat(512);
    let mut v: Vec<String> = [
        "",
        " ",
        "\t",
        "\n",
        "all()",
        " all( ) ",
        "all(\n)",
        "global()",
        "!global()",
        "global( \r\n )",
        "has(a) && global()",
        "has(",
        "has()",
        "has(a",
        "has (a)",
        "has(\u{b}a)",
        "has(\x0ca\x0c)",
        "all(",
        "all == 'x'",
        "has == 'x'",
        "global != 'x'",
        "in in {'in'}",
        "contains contains 'contains'",
        "not not in {}",
        "a notin {}",
        "a not\nin {}",
        "a not in{}",
        "a inx {}",
        "a in {}",
        "a in {,}",
        "a in {'x',}",
        "a in {'x',,}",
        "a in {'x' 'y'}",
        "a in 'x'",
        "a startswith 'x'",
        "a starts\twith 'x'",
        "a starts\nwith 'x'",
        "a endswith''",
        "a containsx 'y'",
        "a contains'\"'",
        "a == '\"'",
        "a == \"'\"",
        "a == 'b\"c' || b == \"it's\"",
        "a == 'x'&&b == 'y'||!c != 'z'",
        "!",
        "!!",
        "!!!has(a)",
        "!(!(has(a)))",
        "()",
        "(",
        ")",
        "(has(a)",
        "has(a))",
        "a",
        "a ",
        "a b",
        "a = 'b'",
        "a === 'b'",
        "a !== 'b'",
        "a == 'b' &",
        "a == 'b' |",
        "a == 'b' & & has(c)",
        "'b' == a",
        "b == b",
        "%",
        "ä == 'x'",
        "a == 'ä'",
        "-.a/b_9 == ''",
        "!= 'x'",
        "a != ",
        "has(a) has(b)",
        "has(a) !has(b)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("{long} == 'x'"));
    v.push(format!("{long}k == 'x'"));
    v.push(format!("{long}in {{'x'}}"));
    v.push(format!("{long}contains 'x'"));
    v.push(format!("has({long})"));
    v.push(format!("has({long}k)"));
    v.push(format!("{}has(a){}", "(".repeat(40), ")".repeat(40)));
    v.push(format!("{}has(a)", "!".repeat(41)));
    v
}

struct Gen {
    rng: Rng,
}

impl Gen {
    /// Whitespace between tokens: usually one space, sometimes none or odd mixtures.
    fn ws(&mut self) -> &'static str {
        self.rng
            .pick_str(&["", " ", " ", " ", " ", "  ", "\t", " \t "])
    }

    /// Whitespace before a word operator: a missing space glues the word onto the key.
    fn ws_word(&mut self) -> &'static str {
        if self.rng.chance(4) {
            ""
        } else {
            self.rng.pick_str(&[" ", " ", " ", "  ", "\t"])
        }
    }

    /// Whitespace inside `has( )`, `all( )` and two-word operators. Calico 3.31 accepts only
    /// spaces and tabs there (older releases' regexes took `\s*`): line breaks and form feeds
    /// stay, rarely, to keep probing that edge.
    fn re_ws(&mut self) -> &'static str {
        if self.rng.chance(3) {
            self.rng.pick_str(&["\n", "\r\n", "\x0c", " \n\t"])
        } else {
            self.rng
                .pick_str(&["", "", "", " ", " ", "  ", "\t", " \t"])
        }
    }

    fn key(&mut self) -> String {
        match self.rng.below(20) {
            0 => {
                const CHARS: &[u8] = b"abcXYZ019_./-";
                let n = 1 + self.rng.below(6);
                (0..n).map(|_| *self.rng.pick(CHARS) as char).collect()
            }
            1 if self.rng.chance(10) => "q".repeat(510 + self.rng.below(5)),
            _ => self.rng.pick(KEYS).to_string(),
        }
    }

    fn value(&mut self) -> String {
        if self.rng.chance(5) {
            let n = self.rng.below(4);
            (0..n)
                .map(|_| *self.rng.pick(&['x', 'y', ' ', '\'', '"', 'é']))
                .collect()
        } else {
            self.rng.pick(VALUES).to_string()
        }
    }

    /// A string literal for `v`, in whichever quote style can hold it.
    fn quoted(&mut self, v: &str) -> String {
        let q = match (v.contains('"'), v.contains('\'')) {
            (true, true) => return format!("'{}'", v.replace('\'', "")),
            (true, false) => '\'',
            (false, true) => '"',
            (false, false) => *self.rng.pick(&['\'', '"']),
        };
        format!("{q}{v}{q}")
    }

    fn set(&mut self) -> String {
        let n = self.rng.below(5);
        let mut s = String::from("{");
        s.push_str(self.ws());
        for i in 0..n {
            if i > 0 {
                s.push_str(self.ws());
                s.push(',');
                s.push_str(self.ws());
            }
            let v = self.value();
            s.push_str(&self.quoted(&v));
        }
        if n > 0 && self.rng.chance(10) {
            s.push(',');
        }
        s.push_str(self.ws());
        s.push('}');
        s
    }

    fn comparison(&mut self, op: &str) -> String {
        let key = self.key();
        let v = self.value();
        let (w1, w2) = (self.ws(), self.ws());
        format!("{key}{w1}{op}{w2}{}", self.quoted(&v))
    }

    fn word_comparison(&mut self, op: &str) -> String {
        let key = self.key();
        let v = self.value();
        let (w1, w2) = (self.ws_word(), self.ws());
        format!("{key}{w1}{op}{w2}{}", self.quoted(&v))
    }

    fn atom(&mut self, depth: usize) -> String {
        let mut s = String::new();
        // Leading negations, including runs that cancel out.
        if self.rng.chance(25) {
            for _ in 0..1 + self.rng.below(3) {
                s.push('!');
                s.push_str(self.ws());
            }
        }
        let body = match self.rng.below(16) {
            0 => format!("all({})", self.re_ws()),
            1 => format!("global({})", self.re_ws()),
            2 | 3 => {
                let (w1, key, w2) = (self.re_ws(), self.key(), self.re_ws());
                format!("has({w1}{key}{w2})")
            }
            4 => self.comparison("=="),
            5 => self.comparison("!="),
            6 | 7 => {
                let (key, w1, w2) = (self.key(), self.ws_word(), self.ws());
                format!("{key}{w1}in{w2}{}", self.set())
            }
            8 => {
                let (key, w1, w2, w3) = (self.key(), self.ws_word(), self.re_ws(), self.ws());
                format!("{key}{w1}not{w2}in{w3}{}", self.set())
            }
            9 => self.word_comparison("contains"),
            10 => {
                let op = format!("starts{}with", self.re_ws());
                self.word_comparison(&op)
            }
            11 => {
                let op = format!("ends{}with", self.re_ws());
                self.word_comparison(&op)
            }
            _ if depth < 4 => {
                let (w1, w2) = (self.ws(), self.ws());
                format!("({w1}{}{w2})", self.or_expr(depth + 1))
            }
            _ => format!("has({})", self.key()),
        };
        s.push_str(&body);
        s
    }

    fn and_expr(&mut self, depth: usize) -> String {
        let n = 1 + self.rng.below(3);
        let mut parts = Vec::new();
        for _ in 0..n {
            parts.push(self.atom(depth));
        }
        let sep = format!("{}&&{}", self.ws(), self.ws());
        parts.join(&sep)
    }

    fn or_expr(&mut self, depth: usize) -> String {
        let n = 1 + self.rng.below(3);
        let mut parts = Vec::new();
        for _ in 0..n {
            parts.push(self.and_expr(depth));
        }
        let sep = format!("{}||{}", self.ws(), self.ws());
        parts.join(&sep)
    }

    /// Breaks a selector in a random way (which sometimes still leaves it valid).
    fn malform(&mut self, s: &str) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        for _ in 0..1 + self.rng.below(2) {
            let at = self.rng.below(chars.len() + 1);
            match self.rng.below(5) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.truncate(at),
                2 if at < chars.len() => {
                    let end = (at + 1 + self.rng.below(6)).min(chars.len());
                    let dup: Vec<char> = chars[at..end].to_vec();
                    chars.splice(at..at, dup);
                }
                _ => {
                    let junk = self.rng.pick(JUNK);
                    chars.splice(at..at, junk.chars());
                }
            }
        }
        chars.into_iter().collect()
    }

    fn selector(&mut self) -> String {
        let s = match self.rng.below(40) {
            0 => String::new(),
            1 => self.ws().to_string(),
            _ => {
                let (w1, w2) = (self.ws(), self.ws());
                format!("{w1}{}{w2}", self.or_expr(0))
            }
        };
        if self.rng.chance(20) {
            self.malform(&s)
        } else {
            s
        }
    }

    fn labels(&mut self) -> BTreeMap<String, String> {
        let n = self.rng.below(6);
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = if self.rng.chance(90) {
                self.rng.pick(KEYS).to_string()
            } else {
                self.key()
            };
            let v = self.value();
            m.insert(k, v);
        }
        m
    }
}

/// Debug form of `s`, shortened so that a disagreement report stays readable.
fn show(s: impl std::fmt::Debug) -> String {
    let full = format!("{s:?}");
    let len = full.chars().count();
    if len <= 200 {
        return full;
    }
    let head: String = full.chars().take(200).collect();
    format!("{head}... ({len} chars)")
}

/// Index (in characters) of the first character where `a` and `b` differ.
fn first_difference(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// `s` from a little before character `at`, so that a difference is visible in context.
fn tail_from(s: &str, at: usize) -> String {
    s.chars().skip(at.saturating_sub(20)).collect()
}

/// Calico's selector oracle, built from tests/calico with Calico v3.31.0 (the same
/// release as the control plane's calico-apiserver and kube-controllers).
fn build_oracle() -> PathBuf {
    crate::harness::calico_program("calico-selector-oracle")
}

/// Runs every case through one oracle process and returns its answers, in order.
fn run_oracle(bin: &Path, cases: &[(String, BTreeMap<String, String>)]) -> Vec<Value> {
    let mut input = String::new();
    for (sel, labels) in cases {
        input.push_str(&json!({ "selector": sel, "labels": labels }).to_string());
        input.push('\n');
    }
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", bin.display()));
    let mut stdin = child.stdin.take().expect("oracle stdin");
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(input.as_bytes())
            .expect("write cases to the oracle");
    });
    let output = child.wait_with_output().expect("wait for the oracle");
    writer.join().expect("oracle writer thread");
    assert!(
        output.status.success(),
        "selector oracle failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("oracle output is UTF-8");
    let answers: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad oracle line {l:?}: {e}")))
        .collect();
    assert_eq!(
        answers.len(),
        cases.len(),
        "oracle answered a different number of cases"
    );
    answers
}

#[test]
fn selector_differential() {
    let bin = build_oracle();

    let mut g = Gen { rng: Rng(SEED) };
    let mut cases: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for sel in corner_cases() {
        for _ in 0..LABEL_SETS_PER_SELECTOR {
            let labels = g.labels();
            cases.push((sel.clone(), labels));
        }
        // Make sure a label set containing the key of a 512-character-key selector exists.
        let mut long = BTreeMap::new();
        long.insert("k".repeat(512), "x".to_string());
        cases.push((sel, long));
    }
    for _ in 0..SELECTORS {
        let sel = g.selector();
        for _ in 0..LABEL_SETS_PER_SELECTOR {
            let labels = g.labels();
            cases.push((sel.clone(), labels));
        }
    }

    let started = std::time::Instant::now();
    let answers = run_oracle(&bin, &cases);
    let oracle_time = started.elapsed();

    let mut disagreements = Vec::new();
    let (mut parsed, mut rejected, mut matched) = (0usize, 0usize, 0usize);
    for ((sel, labels), want) in cases.iter().zip(&answers) {
        if let Some(p) = want.get("panic") {
            disagreements.push(format!("{}: Calico's parser panicked: {p}", show(sel)));
            continue;
        }
        let want_ok = want["ok"].as_bool().expect("ok is a bool");
        let got = parse(sel);
        match (&got, want_ok) {
            (Ok(s), true) => {
                parsed += 1;
                let want_canon = want["canonical"].as_str().expect("canonical is a string");
                let want_match = want["matches"].as_bool().expect("matches is a bool");
                matched += usize::from(want_match);
                let (canon, got_match) = (s.canonical(), s.matches(labels));
                if canon != want_canon {
                    disagreements.push(format!(
                        "{}: canonical forms differ from character {}: ours {}, Calico {}",
                        show(sel),
                        first_difference(&canon, want_canon),
                        show(tail_from(&canon, first_difference(&canon, want_canon))),
                        show(tail_from(want_canon, first_difference(&canon, want_canon)))
                    ));
                } else if got_match != want_match {
                    disagreements.push(format!(
                        "{} on {}: ours matches={got_match}, Calico matches={want_match}",
                        show(sel),
                        show(labels)
                    ));
                }
            }
            (Err(e), false) => {
                rejected += 1;
                // Both reject; the error must still point inside (or just past) the input.
                if e.column() == 0 || e.column() > sel.chars().count() + 1 {
                    disagreements.push(format!("{}: error column out of range: {e}", show(sel)));
                }
            }
            (Ok(s), false) => disagreements.push(format!(
                "{}: we accept it (as {}), Calico rejects it: {}",
                show(sel),
                show(s.canonical()),
                want["error"]
            )),
            (Err(e), true) => disagreements.push(format!(
                "{}: Calico accepts it (as {}), we reject it: {e}",
                show(sel),
                show(want["canonical"].as_str().unwrap_or_default())
            )),
        }
    }

    let total = cases.len();
    let agreed = total - disagreements.len();
    println!(
        "selector differential: {total} cases, {agreed} agree, {} disagree \
         ({parsed} parse in both, {rejected} rejected by both, {matched} match); oracle took {oracle_time:?}",
        disagreements.len(),
    );
    for d in disagreements.iter().take(20) {
        println!("  DISAGREE {d}");
    }
    assert!(total >= 10_000, "too few cases: {total}");
    assert!(
        disagreements.is_empty(),
        "{} of {total} cases disagree with Calico (first 20 printed above)",
        disagreements.len()
    );
    // Guard against a generator that drifts into testing only one outcome.
    assert!(
        parsed * 100 >= total * 50,
        "only {parsed} of {total} cases parse"
    );
    assert!(
        rejected * 100 >= total * 5,
        "only {rejected} of {total} cases fail to parse"
    );
    assert!(
        matched * 100 >= parsed * 20,
        "only {matched} of {parsed} parsed cases match"
    );
}
