//! A go-bexpr subset for the `filter` query parameter.
//!
//! Supported: selectors (`Tags`, `ServiceName`, `Meta.key`, dotted paths), string values in double
//! quotes or backticks, numbers and booleans; operators `==`, `!=`, `contains`, `not contains`,
//! `in`, `not in`, `is empty`, `is not empty`, `matches`, `not matches`; `and`, `or`, `not` and
//! parentheses. This covers what Traefik sends (`Tags contains "traefik.enable=true"`).

use serde_json::Value;

/// A filter that could not be parsed (real Nomad answers 500 with the parse error).
#[derive(Debug, thiserror::Error)]
#[error("failed to parse filter: {0}")]
pub struct FilterError(String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Eq,
    Ne,
}

fn lex(input: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Eq);
                i += 2;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Ne);
                i += 2;
            }
            '"' | '`' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(FilterError("unterminated string".into()));
                    };
                    i += 1;
                    if ch == quote {
                        break;
                    }
                    if ch == '\\'
                        && quote == '"'
                        && let Some(&next) = chars.get(i)
                    {
                        s.push(next);
                        i += 1;
                        continue;
                    }
                    s.push(ch);
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '"' | '`' | '=' | '!')
                {
                    i += 1;
                }
                if start == i {
                    return Err(FilterError(format!("unexpected character {c:?}")));
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

/// A parsed filter expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both sides.
    And(Box<Expr>, Box<Expr>),
    /// Either side.
    Or(Box<Expr>, Box<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `selector op value`.
    Match {
        selector: Vec<String>,
        op: Op,
        value: String,
    },
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `contains` / `in` (value in selector)
    Contains,
    /// `not contains` / `not in`
    NotContains,
    /// `is empty`
    Empty,
    /// `is not empty`
    NotEmpty,
    /// `matches`
    Matches,
    /// `not matches`
    NotMatches,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err(FilterError("missing closing parenthesis".into()));
            }
            self.pos += 1;
            return Ok(e);
        }
        self.matcher()
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Str(s)) | Some(Tok::Word(s)) => {
                self.pos += 1;
                Ok(s)
            }
            other => Err(FilterError(format!("expected a value, found {other:?}"))),
        }
    }

    fn matcher(&mut self) -> Result<Expr, FilterError> {
        // `"value" in Selector` / `"value" not in Selector`
        if let Some(Tok::Str(v)) = self.toks.get(self.pos).cloned() {
            self.pos += 1;
            let negated = if self.peek_word("not") {
                self.pos += 1;
                true
            } else {
                false
            };
            if !self.peek_word("in") {
                return Err(FilterError("expected `in` after a value".into()));
            }
            self.pos += 1;
            let sel = self.selector()?;
            return Ok(Expr::Match {
                selector: sel,
                op: if negated {
                    Op::NotContains
                } else {
                    Op::Contains
                },
                value: v,
            });
        }
        let selector = self.selector()?;
        let op = match self.toks.get(self.pos).cloned() {
            Some(Tok::Eq) => Op::Eq,
            Some(Tok::Ne) => Op::Ne,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("contains") => Op::Contains,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("matches") => Op::Matches,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("is") => {
                self.pos += 1;
                if self.peek_word("not") {
                    self.pos += 1;
                    if !self.peek_word("empty") {
                        return Err(FilterError("expected `empty`".into()));
                    }
                    self.pos += 1;
                    return Ok(Expr::Match {
                        selector,
                        op: Op::NotEmpty,
                        value: String::new(),
                    });
                }
                if !self.peek_word("empty") {
                    return Err(FilterError("expected `empty`".into()));
                }
                self.pos += 1;
                return Ok(Expr::Match {
                    selector,
                    op: Op::Empty,
                    value: String::new(),
                });
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                self.pos += 1;
                if self.peek_word("contains") {
                    Op::NotContains
                } else if self.peek_word("matches") {
                    Op::NotMatches
                } else {
                    return Err(FilterError(
                        "expected `contains` or `matches` after `not`".into(),
                    ));
                }
            }
            other => {
                return Err(FilterError(format!(
                    "expected an operator, found {other:?}"
                )));
            }
        };
        self.pos += 1;
        let value = self.value()?;
        Ok(Expr::Match {
            selector,
            op,
            value,
        })
    }

    fn selector(&mut self) -> Result<Vec<String>, FilterError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w.split('.').map(String::from).collect())
            }
            other => Err(FilterError(format!("expected a selector, found {other:?}"))),
        }
    }
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let toks = lex(input)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(FilterError(format!(
            "unexpected trailing input at token {}",
            p.pos
        )));
    }
    Ok(e)
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = match cur {
            Value::Object(m) => m.get(key).or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `v` matches `expr`.
pub fn eval(expr: &Expr, v: &Value) -> bool {
    match expr {
        Expr::And(a, b) => eval(a, v) && eval(b, v),
        Expr::Or(a, b) => eval(a, v) || eval(b, v),
        Expr::Not(a) => !eval(a, v),
        Expr::Match {
            selector,
            op,
            value,
        } => {
            let found = lookup(v, selector);
            match op {
                Op::Eq => found.is_some_and(|f| as_text(f) == *value),
                Op::Ne => found.is_none_or(|f| as_text(f) != *value),
                Op::Contains | Op::NotContains => {
                    let has = match found {
                        Some(Value::Array(items)) => items.iter().any(|i| as_text(i) == *value),
                        Some(Value::Object(m)) => m.contains_key(value),
                        Some(Value::String(s)) => s.contains(value.as_str()),
                        _ => false,
                    };
                    if *op == Op::Contains { has } else { !has }
                }
                Op::Empty | Op::NotEmpty => {
                    let empty = match found {
                        None | Some(Value::Null) => true,
                        Some(Value::Array(a)) => a.is_empty(),
                        Some(Value::Object(m)) => m.is_empty(),
                        Some(Value::String(s)) => s.is_empty(),
                        _ => false,
                    };
                    if *op == Op::Empty { empty } else { !empty }
                }
                Op::Matches | Op::NotMatches => {
                    let hit = regex::Regex::new(value)
                        .ok()
                        .is_some_and(|re| found.is_some_and(|f| re.is_match(&as_text(f))));
                    if *op == Op::Matches { hit } else { !hit }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn traefik_tag_filter_selects_only_enabled_registrations() {
        let e = parse("Tags contains \"traefik.enable=true\"").unwrap();
        assert!(eval(&e, &json!({"Tags": ["traefik.enable=true", "x"]})));
        assert!(!eval(&e, &json!({"Tags": ["traefik.enable=false"]})));
        assert!(!eval(&e, &json!({"Tags": null})));
    }

    #[test]
    fn boolean_combinations_and_in_form_work() {
        let e =
            parse("(ServiceName == \"web\" and \"a\" in Tags) or not Tags is not empty").unwrap();
        assert!(eval(&e, &json!({"ServiceName": "web", "Tags": ["a"]})));
        assert!(eval(&e, &json!({"ServiceName": "x", "Tags": []})));
        assert!(!eval(&e, &json!({"ServiceName": "x", "Tags": ["a"]})));
    }

    #[test]
    fn malformed_filters_are_errors() {
        assert!(parse("Tags contains").is_err());
        assert!(parse("(Tags == \"a\"").is_err());
    }
}
