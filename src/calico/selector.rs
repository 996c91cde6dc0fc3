//! Calico's label selector language: parse, evaluate and canonicalise the selectors found in
//! Calico policies (`selector`, `namespaceSelector`, ...).
//!
//! Calico's Go implementation (`libcalico-go/lib/selector` in `github.com/projectcalico/calico`
//! `v1.11.0-cni-plugin.0.20250813170300-a0db560f0520`) is the authority; this module replicates
//! its tokenizer, parser, evaluator and `String()` form, and `tests/e2e/selector_differential.rs`
//! checks that against the Go code itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

/// Longest label key Calico's tokenizer accepts as one identifier (`[a-zA-Z0-9_./-]{1,512}`).
const MAX_KEY_LEN: usize = 512;

/// Deepest parenthesis nesting accepted. Calico has no limit; this one only exists so that a
/// hostile input cannot overflow the stack, and no real selector comes anywhere near it.
pub const MAX_NESTING: usize = 100;

/// Anything that can answer "what is the value of label `key`?".
pub trait LabelSource {
    /// The value of label `key`, or `None` when the label is absent. An empty value is present.
    fn get(&self, key: &str) -> Option<&str>;
}

impl LabelSource for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: BuildHasher> LabelSource for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl<T: LabelSource + ?Sized> LabelSource for &T {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

/// One node of a parsed selector. The shape is exactly Calico's AST: an unparenthesised
/// `&&` or `||` chain is one node holding all its operands (parenthesised chains stay nested),
/// parentheses leave no node of their own, and a run of `!` collapses to zero or one
/// [`Expr::Not`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()` (also the empty selector): matches everything.
    All,
    /// `global()`: matches every label set, like `all()`; see [`Selector::is_global`].
    Global,
    /// `has(key)`: the label is present (any value, including empty).
    Has(String),
    /// `key == "value"`: present and equal.
    Eq { key: String, value: String },
    /// `key != "value"`: absent, or present with another value.
    Ne { key: String, value: String },
    /// `key contains "value"`: present and contains the substring.
    Contains { key: String, value: String },
    /// `key starts with "value"`: present and has the prefix.
    StartsWith { key: String, value: String },
    /// `key ends with "value"`: present and has the suffix.
    EndsWith { key: String, value: String },
    /// `key in {...}`: present with one of the values. `values` is sorted and deduplicated;
    /// an empty set never matches.
    In { key: String, values: Vec<String> },
    /// `key not in {...}`: absent, or present with none of the values. `values` is sorted and
    /// deduplicated; an empty set always matches.
    NotIn { key: String, values: Vec<String> },
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && ...` (at least two operands).
    And(Vec<Expr>),
    /// `a || b || ...` (at least two operands).
    Or(Vec<Expr>),
}

impl Expr {
    fn matches(&self, labels: &dyn LabelSource) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(key) => labels.get(key).is_some(),
            Expr::Eq { key, value } => labels.get(key) == Some(value.as_str()),
            Expr::Ne { key, value } => labels.get(key) != Some(value.as_str()),
            Expr::Contains { key, value } => {
                labels.get(key).is_some_and(|v| v.contains(value.as_str()))
            }
            Expr::StartsWith { key, value } => labels
                .get(key)
                .is_some_and(|v| v.starts_with(value.as_str())),
            Expr::EndsWith { key, value } => {
                labels.get(key).is_some_and(|v| v.ends_with(value.as_str()))
            }
            Expr::In { key, values } => labels.get(key).is_some_and(|v| in_set(values, v)),
            Expr::NotIn { key, values } => labels.get(key).is_none_or(|v| !in_set(values, v)),
            Expr::Not(inner) => !inner.matches(labels),
            Expr::And(operands) => operands.iter().all(|e| e.matches(labels)),
            Expr::Or(operands) => operands.iter().any(|e| e.matches(labels)),
        }
    }

    fn mentions_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(inner) => inner.mentions_global(),
            Expr::And(operands) | Expr::Or(operands) => operands.iter().any(Expr::mentions_global),
            _ => false,
        }
    }
}

/// Membership in a sorted, deduplicated set (Calico's `StringSet.Contains`).
fn in_set(values: &[String], v: &str) -> bool {
    values.binary_search_by(|s| s.as_str().cmp(v)).is_ok()
}

/// Calico quotes with `"` unless the value contains `"` (a value can never contain both
/// quote characters, because string literals have no escapes).
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let q = if s.contains('"') { '\'' } else { '"' };
    write!(f, "{q}{s}{q}")
}

fn write_set(f: &mut fmt::Formatter<'_>, key: &str, op: &str, values: &[String]) -> fmt::Result {
    write!(f, "{key} {op} {{")?;
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

fn write_chain(f: &mut fmt::Formatter<'_>, operands: &[Expr], op: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, e) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        write!(f, "{e}")?;
    }
    f.write_str(")")
}

/// Calico's canonical `String()` form.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(key) => write!(f, "has({key})"),
            Expr::Eq { key, value } => {
                write!(f, "{key} == ")?;
                write_quoted(f, value)
            }
            Expr::Ne { key, value } => {
                write!(f, "{key} != ")?;
                write_quoted(f, value)
            }
            Expr::Contains { key, value } => {
                write!(f, "{key} contains ")?;
                write_quoted(f, value)
            }
            Expr::StartsWith { key, value } => {
                write!(f, "{key} starts with ")?;
                write_quoted(f, value)
            }
            Expr::EndsWith { key, value } => {
                write!(f, "{key} ends with ")?;
                write_quoted(f, value)
            }
            Expr::In { key, values } => write_set(f, key, "in", values),
            Expr::NotIn { key, values } => write_set(f, key, "not in", values),
            Expr::Not(inner) => write!(f, "!{inner}"),
            Expr::And(operands) => write_chain(f, operands, " && "),
            Expr::Or(operands) => write_chain(f, operands, " || "),
        }
    }
}

/// A parsed Calico selector.
///
/// # `global()`
///
/// Calico's evaluator treats `global()` exactly like `all()`: it matches every label set, and
/// [`Selector::matches`] does the same. Its meaning lives outside the evaluator. It is only
/// valid as the *whole* `namespaceSelector` of a policy rule (Calico's validator rejects it
/// next to `&&`/`||`), and when Calico converts a rule for Felix
/// (`libcalico-go/lib/backend/syncersv1/updateprocessors/rules.go`) it rewrites a
/// `namespaceSelector` of `global()` to `!has(projectcalico.org/namespace)`, i.e. "only
/// non-namespaced endpoints: host endpoints and global network sets", whereas `all()` becomes
/// `has(projectcalico.org/namespace)`, "workloads in any namespace". A policy evaluator must
/// therefore check [`Selector::is_global`] on a rule's `namespaceSelector` *before* matching
/// namespace labels, and treat it as selecting non-namespaced endpoints only; a `selector`
/// (endpoint selector) containing `global()` just matches like `all()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// The selector `all()`.
    pub fn all() -> Selector {
        Selector { expr: Expr::All }
    }

    /// The root of the AST.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Evaluates the selector against a label set, exactly as Calico's `Evaluate` does.
    pub fn matches(&self, labels: &impl LabelSource) -> bool {
        self.expr.matches(labels)
    }

    /// Calico's canonical form (Go `Selector.String()`), e.g. `(a == "b" && has(c))`.
    pub fn canonical(&self) -> String {
        self.expr.to_string()
    }

    /// True when the selector is `all()` (including the empty selector, `(all())`, `!!all()`).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// True when the selector is exactly `global()` (see the type-level docs).
    pub fn is_global(&self) -> bool {
        self.expr == Expr::Global
    }

    /// True when `global()` appears anywhere in the selector.
    pub fn mentions_global(&self) -> bool {
        self.expr.mentions_global()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        parse(s)
    }
}

/// A selector that does not parse: what went wrong and the 1-based column (in characters)
/// where it went wrong; one past the last character means "at the end of the input".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct SelectorError {
    message: String,
    column: usize,
}

impl SelectorError {
    /// The message without the column.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 1-based character column.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The input on one line with a caret under the failing column. Control characters
    /// (tabs, newlines) are shown as spaces so that the caret lines up.
    pub fn render_caret(&self, input: &str) -> String {
        let line: String = input
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{line}\n{}^", " ".repeat(self.column.saturating_sub(1)))
    }
}

/// Parses a selector with Calico's grammar. The empty (or blank) selector is `all()`.
pub fn parse(input: &str) -> Result<Selector, SelectorError> {
    let tokens = tokenize(input);
    let mut parser = Parser {
        input,
        tokens,
        pos: 0,
    };
    if matches!(parser.peek().kind, Kind::Eof) {
        return Ok(Selector::all());
    }
    let expr = parser.parse_or(0)?;
    let tok = parser.peek();
    if !matches!(tok.kind, Kind::Eof) {
        return Err(parser.error_at(
            tok,
            format!("unexpected {} after a complete expression", describe(tok)),
        ));
    }
    Ok(Selector { expr })
}

// ---------------------------------------------------------------------------------------------
// Tokenizer: a transcription of Calico v3.31.0's tokenizer.Tokenize. Instead of failing outright, a
// lexical error becomes the last token, so the parser can report an earlier syntax error first.

#[derive(Clone, Debug, PartialEq)]
enum Kind<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Not,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Has(&'a str),
    LParen,
    RParen,
    And,
    Or,
    Global,
    Eof,
    Error(String),
}

#[derive(Clone, Debug)]
struct Token<'a> {
    kind: Kind<'a>,
    /// Byte offset of the token (or of the error) in the input.
    start: usize,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Calico's tokenizer skips only spaces and tabs (`trimWhitespace`), also inside `has( )`,
/// `all( )`, `global( )` and between the words of `not in`, `starts with`, `ends with`.
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_blank(s[i]) {
        i += 1;
    }
    i
}

fn key_run(s: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < s.len() && is_key_byte(s[i]) {
        i += 1;
    }
    i - start
}

/// Calico's `isWordBoundary`: the end of the input or a byte that cannot be in a label key.
fn word_boundary_at(s: &[u8], end: usize) -> bool {
    end >= s.len() || !is_key_byte(s[end])
}

/// Calico's `cutMultiWordPrefixCheckBreak`: each word followed by optional blanks, then a word
/// boundary. Returns the length consumed (blanks included).
fn match_words(s: &[u8], words: &[&str]) -> Option<usize> {
    let mut i = 0;
    for word in words {
        if !s[i..].starts_with(word.as_bytes()) {
            return None;
        }
        i = skip_blanks(s, i + word.len());
    }
    word_boundary_at(s, i).then_some(i)
}

/// What `name(` blanks `)` (all, global) leaves: `Ok(len)` on a match, `Err(offset)` when the
/// input starts with `name(` but does not close, `None` when it does not start with `name(`.
fn match_call(s: &[u8], name: &str) -> Option<Result<usize, usize>> {
    let after = s.strip_prefix(name.as_bytes())?.strip_prefix(b"(")?;
    let i = skip_blanks(after, 0);
    let open = name.len() + 1;
    Some(if after.get(i) == Some(&b')') {
        Ok(open + i + 1)
    } else {
        Err(open + i)
    })
}

fn tokenize(input: &str) -> Vec<Token<'_>> {
    let s = input.as_bytes();
    let mut tokens: Vec<Token<'_>> = Vec::new();
    let mut pos = 0;
    loop {
        pos = skip_blanks(s, pos);
        if pos == s.len() {
            tokens.push(Token {
                kind: Kind::Eof,
                start: pos,
            });
            return tokens;
        }
        let after_label = match tokens.last() {
            Some(Token {
                kind: Kind::Label(key),
                ..
            }) => Some(*key),
            _ => None,
        };
        match next_token(input, pos, after_label) {
            Ok((kind, len)) => {
                tokens.push(Token { kind, start: pos });
                pos += len;
            }
            Err((start, message)) => {
                tokens.push(Token {
                    kind: Kind::Error(message),
                    start,
                });
                return tokens;
            }
        }
    }
}

/// A token and its length in bytes, or where the input stops being a selector and why.
type Lexed<'a> = Result<(Kind<'a>, usize), (usize, String)>;

/// The token at `pos` (not a blank): punctuation and strings anywhere, an operator word right
/// after a label, otherwise a function call or a label.
fn next_token<'a>(input: &'a str, pos: usize, after_label: Option<&str>) -> Lexed<'a> {
    if let Some(lexed) = punctuation(input, pos) {
        return lexed;
    }
    let rest = &input.as_bytes()[pos..];
    if let Some(key) = after_label {
        return operator_word(rest, pos, key);
    }
    has_call(input, pos)
        .or_else(|| call_without_arguments(rest, pos))
        .unwrap_or_else(|| label(input, pos))
}

/// Brackets, commas, quoted strings and the operators spelled with symbols.
fn punctuation(input: &str, pos: usize) -> Option<Lexed<'_>> {
    let rest = &input.as_bytes()[pos..];
    let simple = |kind: Kind<'static>, len: usize| Some(Ok((kind, len)));
    let single = |expected: &str, found: char| {
        let message = format!("expected '{expected}' but found a single '{found}'");
        Some(Err((pos, message)))
    };
    let doubled = rest.get(1) == Some(&rest[0]);
    match rest[0] {
        b'(' => simple(Kind::LParen, 1),
        b')' => simple(Kind::RParen, 1),
        b'{' => simple(Kind::LBrace, 1),
        b'}' => simple(Kind::RBrace, 1),
        b',' => simple(Kind::Comma, 1),
        quote @ (b'"' | b'\'') => Some(string(input, pos, quote)),
        b'=' if doubled => simple(Kind::Eq, 2),
        b'=' => single("==", '='),
        b'!' if rest.get(1) == Some(&b'=') => simple(Kind::Ne, 2),
        b'!' => simple(Kind::Not, 1),
        b'&' if doubled => simple(Kind::And, 2),
        b'&' => single("&&", '&'),
        b'|' if doubled => simple(Kind::Or, 2),
        b'|' => single("||", '|'),
        _ => None,
    }
}

/// A string literal in `quote`s; Calico has no escapes.
fn string(input: &str, pos: usize, quote: u8) -> Lexed<'_> {
    let rest = &input.as_bytes()[pos + 1..];
    match rest.iter().position(|&b| b == quote) {
        Some(n) => Ok((Kind::Str(&input[pos + 1..pos + 1 + n]), n + 2)),
        None => {
            let quote = quote as char;
            let message = format!("unterminated string: no closing {quote} for this {quote}");
            Err((pos, message))
        }
    }
}

/// After a label only an operator word may follow.
fn operator_word<'a>(rest: &[u8], pos: usize, key: &str) -> Lexed<'a> {
    let words: [(&[&str], Kind<'static>); 5] = [
        (&["contains"], Kind::Contains),
        (&["starts", "with"], Kind::StartsWith),
        (&["ends", "with"], Kind::EndsWith),
        (&["not", "in"], Kind::NotIn),
        (&["in"], Kind::In),
    ];
    for (spelling, kind) in words {
        if let Some(n) = match_words(rest, spelling) {
            return Ok((kind, n));
        }
    }
    let message = format!(
        "unexpected characters after label '{key}', expected an operator \
         (==, !=, in, not in, contains, starts with, ends with)"
    );
    Err((pos, message))
}

/// `has(` blanks KEY{1,512} blanks `)`.
fn has_call(input: &str, pos: usize) -> Option<Lexed<'_>> {
    let after = input.as_bytes()[pos..].strip_prefix(b"has(")?;
    let i = skip_blanks(after, 0);
    let n = key_run(after, i);
    let j = skip_blanks(after, i + n);
    let open = pos + 4;
    Some(if n == 0 {
        Err((open + i, "expected a label key after 'has('".to_string()))
    } else if n > MAX_KEY_LEN {
        let message = format!("label key in 'has(...)' is longer than {MAX_KEY_LEN} characters");
        Err((open + i, message))
    } else if after.get(j) != Some(&b')') {
        Err((open + j, "expected ')' to close 'has('".to_string()))
    } else {
        Ok((Kind::Has(&input[open + i..open + i + n]), 4 + j + 1))
    })
}

/// `all()` and `global()`, blanks allowed between the brackets.
fn call_without_arguments<'a>(rest: &[u8], pos: usize) -> Option<Lexed<'a>> {
    [("all", Kind::All), ("global", Kind::Global)]
        .into_iter()
        .find_map(|(name, kind)| {
            Some(match match_call(rest, name)? {
                Ok(n) => Ok((kind, n)),
                Err(off) => Err((pos + off, format!("expected ')' after '{name}('"))),
            })
        })
}

/// A label key: up to [`MAX_KEY_LEN`] key bytes.
fn label(input: &str, pos: usize) -> Lexed<'_> {
    let n = key_run(input.as_bytes(), pos);
    if n > MAX_KEY_LEN {
        Err((
            pos,
            format!("label key is longer than {MAX_KEY_LEN} characters"),
        ))
    } else if n > 0 {
        Ok((Kind::Label(&input[pos..pos + n]), n))
    } else {
        let c = input[pos..].chars().next().unwrap_or_default();
        Err((pos, format!("unexpected character {c:?}")))
    }
}

fn describe(tok: &Token<'_>) -> String {
    match &tok.kind {
        Kind::Label(k) => format!("label '{k}'"),
        Kind::Str(v) => format!("string literal {v:?}"),
        Kind::LBrace => "'{'".into(),
        Kind::RBrace => "'}'".into(),
        Kind::Comma => "','".into(),
        Kind::Eq => "'=='".into(),
        Kind::Ne => "'!='".into(),
        Kind::In => "'in'".into(),
        Kind::NotIn => "'not in'".into(),
        Kind::Not => "'!'".into(),
        Kind::Contains => "'contains'".into(),
        Kind::StartsWith => "'starts with'".into(),
        Kind::EndsWith => "'ends with'".into(),
        Kind::All => "'all()'".into(),
        Kind::Has(k) => format!("'has({k})'"),
        Kind::LParen => "'('".into(),
        Kind::RParen => "')'".into(),
        Kind::And => "'&&'".into(),
        Kind::Or => "'||'".into(),
        Kind::Global => "'global()'".into(),
        Kind::Eof => "end of selector".into(),
        Kind::Error(m) => m.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parser: a transcription of Calico's parser.Parse (parseOrExpression / parseAndExpression /
// parseOperation), with positions.

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        // The token list always ends with Eof or Error, and neither is ever consumed.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) {
        self.pos += 1;
    }

    /// An error at `tok`; a lexical error token reports its own message instead.
    fn error_at(&self, tok: &Token<'_>, message: String) -> SelectorError {
        let message = match &tok.kind {
            Kind::Error(m) => m.clone(),
            _ => message,
        };
        SelectorError {
            message,
            column: self.column_of(tok),
        }
    }

    /// 1-based character column of `tok`.
    fn column_of(&self, tok: &Token<'_>) -> usize {
        self.input[..tok.start].chars().count() + 1
    }

    fn parse_or(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_and(depth)?];
        while matches!(self.peek().kind, Kind::Or) {
            self.advance();
            operands.push(self.parse_and(depth)?);
        }
        Ok(if operands.len() == 1 {
            operands.pop().expect("one operand")
        } else {
            Expr::Or(operands)
        })
    }

    fn parse_and(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut operands = vec![self.parse_operation(depth)?];
        while matches!(self.peek().kind, Kind::And) {
            self.advance();
            operands.push(self.parse_operation(depth)?);
        }
        Ok(if operands.len() == 1 {
            operands.pop().expect("one operand")
        } else {
            Expr::And(operands)
        })
    }

    fn parse_operation(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut negated = false;
        while matches!(self.peek().kind, Kind::Not) {
            negated = !negated;
            self.advance();
        }
        let tok = self.peek().clone();
        let expr = match tok.kind {
            Kind::Has(key) => {
                self.advance();
                Expr::Has(key.to_string())
            }
            Kind::All => {
                self.advance();
                Expr::All
            }
            Kind::Global => {
                self.advance();
                Expr::Global
            }
            Kind::Label(key) => {
                self.advance();
                self.parse_comparison(key)?
            }
            Kind::LParen => {
                if depth >= MAX_NESTING {
                    let msg = format!("parentheses nested more than {MAX_NESTING} deep");
                    return Err(self.error_at(&tok, msg));
                }
                self.advance();
                let inner = self.parse_or(depth + 1)?;
                let close = self.peek();
                if !matches!(close.kind, Kind::RParen) {
                    let msg = format!(
                        "expected ')' to close the '(' at column {}, found {}",
                        self.column_of(&tok),
                        describe(close)
                    );
                    return Err(self.error_at(close, msg));
                }
                self.advance();
                inner
            }
            _ => {
                let msg = format!(
                    "expected an expression (a label comparison, has(...), all(), global(), '!' or '('), found {}",
                    describe(&tok)
                );
                return Err(self.error_at(&tok, msg));
            }
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    /// After `key`: an operator and its operand.
    fn parse_comparison(&mut self, key: &str) -> Result<Expr, SelectorError> {
        let op = self.peek().clone();
        let key = key.to_string();
        let op_name = match op.kind {
            Kind::Eq => "==",
            Kind::Ne => "!=",
            Kind::Contains => "contains",
            Kind::StartsWith => "starts with",
            Kind::EndsWith => "ends with",
            Kind::In | Kind::NotIn => return self.parse_set(key, matches!(op.kind, Kind::NotIn)),
            _ => {
                let msg = format!(
                    "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label '{key}', found {}",
                    describe(&op)
                );
                return Err(self.error_at(&op, msg));
            }
        };
        self.advance();
        let operand = self.peek();
        let Kind::Str(value) = operand.kind else {
            let msg = format!(
                "expected a quoted string after '{op_name}', found {}",
                describe(operand)
            );
            return Err(self.error_at(operand, msg));
        };
        let value = value.to_string();
        self.advance();
        Ok(match op.kind {
            Kind::Eq => Expr::Eq { key, value },
            Kind::Ne => Expr::Ne { key, value },
            Kind::Contains => Expr::Contains { key, value },
            Kind::StartsWith => Expr::StartsWith { key, value },
            _ => Expr::EndsWith { key, value },
        })
    }

    /// After `key in` / `key not in`: `{ "a", "b", }` (a trailing comma is allowed, as in Calico).
    fn parse_set(&mut self, key: String, negated: bool) -> Result<Expr, SelectorError> {
        let op_name = if negated { "not in" } else { "in" };
        self.advance();
        let open = self.peek();
        if !matches!(open.kind, Kind::LBrace) {
            let msg = format!(
                "expected '{{' to start a set after '{op_name}', found {}",
                describe(open)
            );
            return Err(self.error_at(open, msg));
        }
        self.advance();
        let mut values = Vec::new();
        while let Kind::Str(v) = self.peek().kind {
            values.push(v.to_string());
            self.advance();
            if matches!(self.peek().kind, Kind::Comma) {
                self.advance();
            } else {
                break;
            }
        }
        let close = self.peek();
        if !matches!(close.kind, Kind::RBrace) {
            let msg = format!(
                "expected a quoted string or '}}' in the set, found {}",
                describe(close)
            );
            return Err(self.error_at(close, msg));
        }
        self.advance();
        values.sort();
        values.dedup();
        Ok(if negated {
            Expr::NotIn { key, values }
        } else {
            Expr::In { key, values }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn canon(s: &str) -> String {
        parse(s)
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
            .canonical()
    }

    fn m(sel: &str, pairs: &[(&str, &str)]) -> bool {
        parse(sel)
            .unwrap_or_else(|e| panic!("{sel:?} should parse: {e}"))
            .matches(&labels(pairs))
    }

    fn err(s: &str) -> SelectorError {
        parse(s).expect_err(&format!("{s:?} should not parse"))
    }

    #[test]
    fn equality_and_inequality() {
        assert!(m(r#"a == "b""#, &[("a", "b")]));
        assert!(m(r#"a == "b""#, &[("a", "b"), ("c", "d")]));
        assert!(!m(r#"a == "b""#, &[]));
        assert!(!m(r#"a == "b""#, &[("a", "c")]));
        assert!(m(r#"a == """#, &[("a", "")]));
        assert!(!m(r#"a == """#, &[]));
        // != is true when the label is absent.
        assert!(m(r#"a != "b""#, &[]));
        assert!(m(r#"a != "b""#, &[("a", "c")]));
        assert!(!m(r#"a != "b""#, &[("a", "b")]));
        assert!(m(r#"a != """#, &[]));
        assert!(!m(r#"a != """#, &[("a", "")]));
    }

    #[test]
    fn has_and_not_has() {
        assert!(m("has(a)", &[("a", "")]));
        assert!(!m("has(a)", &[("b", "a")]));
        assert!(m("!has(a)", &[("b", "b")]));
        assert!(!m("!has(a)", &[("a", "b")]));
        assert!(m("has( \t a \t)", &[("a", "x")]));
        // Calico 3.31 skips only spaces and tabs inside has( ).
        assert!(parse("has( \t\n a \r\n)").is_err());
    }

    #[test]
    fn set_membership() {
        let sel = r#"a in {"x", 'y'}"#;
        assert!(m(sel, &[("a", "x")]));
        assert!(m(sel, &[("a", "y")]));
        assert!(!m(sel, &[("a", "z")]));
        assert!(!m(sel, &[]));
        let sel = r#"a not in {"x", "y"}"#;
        assert!(m(sel, &[]));
        assert!(m(sel, &[("a", "z")]));
        assert!(!m(sel, &[("a", "x")]));
        // Empty sets.
        assert!(!m("a in {}", &[("a", "")]));
        assert!(!m("a in {}", &[]));
        assert!(m("a not in {}", &[]));
        assert!(m("a not in {}", &[("a", "x")]));
        assert!(m(r#"a in {""}"#, &[("a", "")]));
        // Quotes of the other kind inside values.
        assert!(m(r#"a in {"'", '"', "c"}"#, &[("a", "\"")]));
        assert!(m(r#"a in {"'", '"', "c"}"#, &[("a", "'")]));
    }

    #[test]
    fn string_operators() {
        assert!(m(r#"a contains "b""#, &[("a", "abc")]));
        assert!(!m(r#"a contains "b""#, &[("a", "ac")]));
        assert!(!m(r#"a contains """#, &[]));
        assert!(m(r#"a contains """#, &[("a", "")]));
        assert!(m(r#"a starts with "ab""#, &[("a", "abc")]));
        assert!(!m(r#"a starts with "bc""#, &[("a", "abc")]));
        assert!(m(r#"a ends with "bc""#, &[("a", "abc")]));
        assert!(!m(r#"a ends with "ab""#, &[("a", "abc")]));
        assert!(!m(r#"a ends with "c""#, &[("b", "c")]));
        // Calico's tokenizer allows any whitespace, or none, inside the two-word operators.
        assert!(m(r#"a startswith "a""#, &[("a", "ab")]));
        assert!(m("a starts \t with 'a'", &[("a", "ab")]));
        assert!(m("a startswith 'a'", &[("a", "ab")]));
        assert!(parse("a starts \t\n with 'a'").is_err());
        // Every operator word needs a word boundary after it.
        assert!(parse("a containsx 'a'").is_err());
        assert!(m(r#"a endswith"b""#, &[("a", "ab")]));
        assert!(m(r#"a notin {"x"}"#, &[("a", "y")]));
        assert!(m(r#"a contains"b""#, &[("a", "b")]));
    }

    #[test]
    fn all_global_and_empty() {
        for s in ["", " ", "\t", "all()", " all( ) ", "(all())", "!!all()"] {
            let sel = parse(s).unwrap();
            assert!(sel.is_all(), "{s:?}");
            assert!(sel.matches(&labels(&[])));
            assert_eq!(sel.canonical(), "all()");
        }
        let g = parse(" global( \t) ").unwrap();
        assert!(g.is_global() && !g.is_all() && g.mentions_global());
        assert!(g.matches(&labels(&[])) && g.matches(&labels(&[("a", "b")])));
        assert_eq!(g.canonical(), "global()");
        assert!(!m("!global()", &[]));
        assert!(parse("has(a) || global()").unwrap().mentions_global());
        assert!(!parse("has(global)").unwrap().mentions_global());
        // The words are only functions when followed by '('.
        assert!(m(
            r#"all == "x" && global == "y" && has != "z""#,
            &[("all", "x"), ("global", "y")]
        ));
    }

    #[test]
    fn negation_and_precedence() {
        // ! binds tighter than &&, which binds tighter than ||.
        assert_eq!(
            canon("!has(a) && has(b) || has(c)"),
            "((!has(a) && has(b)) || has(c))"
        );
        assert_eq!(
            canon("has(a) || has(b) && has(c)"),
            "(has(a) || (has(b) && has(c)))"
        );
        assert_eq!(
            canon("has(a) || !has(b) && !!has(c) || has(d)"),
            "(has(a) || (!has(b) && has(c)) || has(d))"
        );
        assert!(m("has(a) || has(b) && has(c)", &[("a", "")]));
        assert!(!m("(has(a) || has(b)) && has(c)", &[("a", "")]));
        assert!(m("!(has(a) && has(b))", &[("a", "")]));
        // Runs of ! collapse.
        assert_eq!(canon("!!has(a)"), "has(a)");
        assert_eq!(canon("! !! has(a)"), "!has(a)");
        assert_eq!(canon("!(a == 'b')"), r#"!a == "b""#);
        assert!(m("! a == 'a1' || ! b == 'b1'", &[("a", "a1")]));
        assert!(!m(
            "! a == 'a1' || ! b == 'b1'",
            &[("a", "a1"), ("b", "b1")]
        ));
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("", "all()"),
            (" (all() )", "all()"),
            ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
            (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
            (r#"a == "'""#, r#"a == "'""#),
            (r#"a == '"'"#, r#"a == '"'"#),
            ("a == 'x'", r#"a == "x""#),
            (r#"a contains '"'"#, r#"a contains '"'"#),
            (r#"a startswith '"'"#, r#"a starts with '"'"#),
            (r#"a endswith "'""#, r#"a ends with "'""#),
            (r#"a!='"'"#, r#"a != '"'"#),
            (
                r#"a in {"z", "z", "x", "y", "x", "a"}"#,
                r#"a in {"a", "x", "y", "z"}"#,
            ),
            (r#"a not in {'b',"a",}"#, r#"a not in {"a", "b"}"#),
            ("a in {}", "a in {}"),
            (r#"k8s.io/app-name_1 == "v""#, r#"k8s.io/app-name_1 == "v""#),
            (
                "(has(a) && (has(b) && has(c)))",
                "(has(a) && (has(b) && has(c)))",
            ),
            ("((has(a)) || ((has(b))))", "(has(a) || has(b))"),
            (
                "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
                r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
            ),
            (
                r#"in == "x" && contains contains "y""#,
                r#"(in == "x" && contains contains "y")"#,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "canonical form of {input:?}");
            // The canonical form round-trips.
            assert_eq!(canon(want), want);
            assert_eq!(parse(want).unwrap(), parse(input).unwrap());
        }
        let sel: Selector = "has(a)".parse().unwrap();
        assert_eq!(sel.to_string(), "has(a)");
    }

    #[test]
    fn label_keys() {
        // Keys are [a-zA-Z0-9_./-]{1,512}; any of those characters may start a key.
        assert!(m(r#"-.a/b_9 == "x""#, &[("-.a/b_9", "x")]));
        assert!(m(r#"9 == "x""#, &[("9", "x")]));
        let long = "k".repeat(512);
        assert!(m(&format!("{long} == 'x'"), &[(&long, "x")]));
        assert!(m(&format!("has({long})"), &[(&long, "")]));
        // A 513-character key is refused ("label too long" in Calico 3.31), also when it ends
        // in an operator word.
        assert!(parse(&format!("{long}k == 'x'")).is_err());
        assert!(parse(&format!("has({long}k)")).is_err());
        assert!(parse(&format!("{long}in {{'x'}}")).is_err());
        // Non-ASCII is only allowed inside string literals.
        assert!(parse("ä == 'x'").is_err());
        assert!(m("a == 'ä ö'", &[("a", "ä ö")]));
    }

    #[test]
    fn whitespace() {
        // Between tokens only spaces and tabs are skipped...
        assert!(parse("\thas(a)\t&&  has(b) ").is_ok());
        assert!(parse("has(a)\n&& has(b)").is_err());
        assert!(parse("\n").is_err());
        // ...and so inside has(), all(), global() and between operator words (Calico 3.31;
        // older releases took any \s there).
        assert!(parse("all(\r\n)").is_err());
        assert!(parse("all( \t)").is_ok());
        assert!(parse("a not\nin {}").is_err());
        assert!(parse("a not \tin {}").is_ok());
        assert!(parse("has(\u{b}a)").is_err());
        // Operator words need a word boundary, and label characters such as '-' are not one.
        assert!(parse("a inx {}").is_err());
        assert!(parse("a in-x {}").is_err());
        assert!(parse("a in{}").is_ok());
        assert!(parse("a == 'x'&&has(b)||!has(c)").is_ok());
    }

    #[test]
    fn errors_with_columns() {
        let cases: &[(&str, &str, usize)] = &[
            ("has(", "expected a label key after 'has('", 5),
            ("has(  )", "expected a label key after 'has('", 7),
            ("has(a", "expected ')' to close 'has('", 6),
            ("all(", "expected ')' after 'all('", 5),
            (
                "a",
                "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label 'a', found end of selector",
                2,
            ),
            (
                "a b",
                "unexpected characters after label 'a', expected an operator (==, !=, in, not in, contains, starts with, ends with)",
                3,
            ),
            (
                "b == b",
                "expected a quoted string after '==', found label 'b'",
                6,
            ),
            ("a = 'b'", "expected '==' but found a single '='", 3),
            (
                "a == 'b' & has(c)",
                "expected '&&' but found a single '&'",
                10,
            ),
            ("a == 'b' |", "expected '||' but found a single '|'", 10),
            ("a == 'b", "unterminated string: no closing ' for this '", 6),
            (
                r#"a in "x""#,
                "expected '{' to start a set after 'in', found string literal \"x\"",
                6,
            ),
            (
                r#"a in {"x" "y"}"#,
                "expected a quoted string or '}' in the set, found string literal \"y\"",
                11,
            ),
            (
                "a in {,}",
                "expected a quoted string or '}' in the set, found ','",
                7,
            ),
            (
                "(has(a)",
                "expected ')' to close the '(' at column 1, found end of selector",
                8,
            ),
            (
                "()",
                "expected an expression (a label comparison, has(...), all(), global(), '!' or '('), found ')'",
                2,
            ),
            (
                "!",
                "expected an expression (a label comparison, has(...), all(), global(), '!' or '('), found end of selector",
                2,
            ),
            ("has(a) )", "unexpected ')' after a complete expression", 8),
            (
                "has(a) has(b)",
                "unexpected 'has(b)' after a complete expression",
                8,
            ),
            (
                "has(a) &&",
                "expected an expression (a label comparison, has(...), all(), global(), '!' or '('), found end of selector",
                10,
            ),
            ("%", "unexpected character '%'", 1),
            ("a == 'ü' && ß", "unexpected character 'ß'", 13),
            (
                "'b1' == b",
                "expected an expression (a label comparison, has(...), all(), global(), '!' or '('), found string literal \"b1\"",
                1,
            ),
            // A syntax error before a lexical error is reported first.
            ("(a == 'x' % 'y'", "unexpected character '%'", 11),
            (
                "has(a) ! %",
                "unexpected '!' after a complete expression",
                8,
            ),
        ];
        for &(input, message, column) in cases {
            let e = err(input);
            assert_eq!(
                (e.message(), e.column()),
                (message, column),
                "error for {input:?}"
            );
            assert_eq!(e.to_string(), format!("{message} at column {column}"));
        }
        let deep = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(err(&deep).message().contains("nested"));
        let ok = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(canon(&ok), "has(a)");
    }

    #[test]
    fn caret_rendering() {
        let e = err("has(");
        assert_eq!(
            e.to_string(),
            "expected a label key after 'has(' at column 5"
        );
        assert_eq!(e.render_caret("has("), "has(\n    ^");
        let input = "a == 'ü'\t&& %";
        let e = err(input);
        assert_eq!(e.column(), 13);
        assert_eq!(e.render_caret(input), "a == 'ü' && %\n            ^");
    }

    #[test]
    fn label_sources() {
        let sel = parse("a == 'b'").unwrap();
        let mut h: HashMap<String, String> = HashMap::new();
        h.insert("a".into(), "b".into());
        assert!(sel.matches(&h));
        assert!(sel.matches(&&h));
        let b = labels(&[("a", "c")]);
        assert!(!sel.matches(&b));
        assert!(!sel.matches(&&b));
        assert!(Selector::all().matches(&b));
        assert_eq!(
            *sel.expr(),
            Expr::Eq {
                key: "a".into(),
                value: "b".into()
            }
        );
    }
}
