//! The `when` condition grammar of routing rules (SPEC §2).
//!
//! ```text
//! expr  := and ("or" and)*
//! and   := unary ("and" unary)*
//! unary := "not" unary | "(" expr ")" | test
//! test  := VAR "is empty" | VAR "is not empty" | VAR OP literal
//! OP    := "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts with" | "ends with"
//! ```
//!
//! A small hand-written recursive-descent parser: the grammar is tiny, and owning it lets
//! every error name the column where it went wrong. Evaluation follows the SPEC: a variable
//! never set (or set to empty text) is empty, and any comparison with it is false.

use std::fmt;

use crate::context::{Value, VarType};

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Test(Test),
}

/// One test on a variable.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub var: String,
    /// 1-based column of the variable in the source, for error messages.
    pub column: usize,
    pub op: Op,
}

/// A test's operator and, for comparisons, its literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    IsEmpty,
    IsNotEmpty,
    Compare(CmpOp, Value),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "starts with",
            CmpOp::EndsWith => "ends with",
        })
    }
}

impl CmpOp {
    /// Whether this operator applies to values of type `ty`.
    pub fn applies_to(self, ty: VarType) -> bool {
        match self {
            CmpOp::Eq | CmpOp::Ne => true,
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => ty == VarType::Number,
            CmpOp::Contains | CmpOp::StartsWith | CmpOp::EndsWith => ty == VarType::Text,
        }
    }
}

/// A syntax error with the 1-based column where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl Expr {
    /// Evaluates the condition; `lookup` gives a variable's current value, if set.
    pub fn eval<'a>(&self, lookup: &impl Fn(&str) -> Option<&'a Value>) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|e| e.eval(lookup)),
            Expr::And(items) => items.iter().all(|e| e.eval(lookup)),
            Expr::Not(inner) => !inner.eval(lookup),
            Expr::Test(t) => t.eval(lookup(&t.var).filter(|v| !v.is_empty())),
        }
    }

    /// Every test in the condition, in source order (for type checking against declarations).
    pub fn tests(&self) -> Vec<&Test> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Test>) {
        match self {
            Expr::Or(items) | Expr::And(items) => items.iter().for_each(|e| e.collect(out)),
            Expr::Not(inner) => inner.collect(out),
            Expr::Test(t) => out.push(t),
        }
    }
}

impl Test {
    fn eval(&self, value: Option<&Value>) -> bool {
        let (op, lit) = match &self.op {
            Op::IsEmpty => return value.is_none(),
            Op::IsNotEmpty => return value.is_some(),
            Op::Compare(op, lit) => (*op, lit),
        };
        let Some(value) = value else { return false };
        match (value, lit) {
            (Value::Text(a), Value::Text(b)) => match op {
                CmpOp::Eq => a == b,
                CmpOp::Ne => a != b,
                CmpOp::Contains => a.contains(b.as_str()),
                CmpOp::StartsWith => a.starts_with(b.as_str()),
                CmpOp::EndsWith => a.ends_with(b.as_str()),
                _ => false,
            },
            (Value::Number(a), Value::Number(b)) => match op {
                CmpOp::Eq => a == b,
                CmpOp::Ne => a != b,
                CmpOp::Lt => a < b,
                CmpOp::Le => a <= b,
                CmpOp::Gt => a > b,
                CmpOp::Ge => a >= b,
                _ => false,
            },
            (Value::Bool(a), Value::Bool(b)) => match op {
                CmpOp::Eq => a == b,
                CmpOp::Ne => a != b,
                _ => false,
            },
            // Mismatched types are rejected when the configuration is checked; at run time
            // they simply do not hold.
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Cmp(CmpOp),
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn column(&self, byte_pos: usize) -> usize {
        self.src[..byte_pos].chars().count() + 1
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    /// The next token and its column, or `None` at the end.
    fn next(&mut self) -> Result<Option<(Tok, usize)>, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let col = self.column(start);
        let rest = &self.src[start..];
        let Some(c) = rest.chars().next() else {
            return Ok(None);
        };
        let err = |message: String| ParseError { column: col, message };
        let two = rest.get(..2).unwrap_or("");
        let tok = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            _ if matches!(two, "==" | "!=" | "<=" | ">=") => {
                self.pos += 2;
                Tok::Cmp(match two {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<=" => CmpOp::Le,
                    _ => CmpOp::Ge,
                })
            }
            '<' | '>' => {
                self.pos += 1;
                Tok::Cmp(if c == '<' { CmpOp::Lt } else { CmpOp::Gt })
            }
            '=' | '!' => return Err(err(format!("unexpected {c:?} (did you mean \"{c}=\"?)"))),
            '"' => {
                let mut out = String::new();
                let mut chars = rest[1..].char_indices();
                loop {
                    match chars.next() {
                        None => return Err(err("unterminated string".into())),
                        Some((i, '"')) => {
                            self.pos = start + 1 + i + 1;
                            break;
                        }
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '"')) => out.push('"'),
                            Some((_, '\\')) => out.push('\\'),
                            Some((_, 'n')) => out.push('\n'),
                            Some((_, 't')) => out.push('\t'),
                            _ => return Err(err("bad escape in string".into())),
                        },
                        Some((_, ch)) => out.push(ch),
                    }
                }
                Tok::Str(out)
            }
            _ if c.is_ascii_digit() || (c == '-' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) => {
                let len = rest
                    .char_indices()
                    .skip(1)
                    .find(|&(_, ch)| !(ch.is_ascii_digit() || ch == '.'))
                    .map_or(rest.len(), |(i, _)| i);
                let text = &rest[..len];
                let n: f64 = text.parse().map_err(|_| err(format!("bad number {text:?}")))?;
                self.pos += len;
                Tok::Num(n)
            }
            _ if c.is_alphabetic() || c == '_' => {
                let len = rest
                    .char_indices()
                    .find(|&(_, ch)| !(ch.is_alphanumeric() || ch == '_' || ch == '.' || ch == '-'))
                    .map_or(rest.len(), |(i, _)| i);
                self.pos += len;
                Tok::Ident(rest[..len].to_owned())
            }
            _ => return Err(err(format!("unexpected character {c:?}"))),
        };
        Ok(Some((tok, col)))
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    end_col: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.i).map_or(self.end_col, |(_, c)| *c)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { column: self.col(), message: message.into() })
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.and()?];
        while self.eat_word("or") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.unary()?];
        while self.eat_word("and") {
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let inner = self.expr()?;
            if self.peek() != Some(&Tok::RParen) {
                return self.err("expected \")\"");
            }
            self.i += 1;
            return Ok(inner);
        }
        self.test()
    }

    fn test(&mut self) -> Result<Expr, ParseError> {
        let column = self.col();
        let var = match self.peek() {
            Some(Tok::Ident(s)) if !is_keyword(s) => s.clone(),
            None => return self.err("expected a variable name, found the end"),
            _ => return self.err("expected a variable name"),
        };
        self.i += 1;
        let op = if self.eat_word("is") {
            let negated = self.eat_word("not");
            if !self.eat_word("empty") {
                return self.err("expected \"empty\"");
            }
            if negated { Op::IsNotEmpty } else { Op::IsEmpty }
        } else {
            let cmp = match self.peek() {
                Some(Tok::Cmp(op)) => *op,
                Some(Tok::Ident(w)) if w == "contains" => CmpOp::Contains,
                Some(Tok::Ident(w)) if w == "starts" || w == "ends" => {
                    let op = if w == "starts" { CmpOp::StartsWith } else { CmpOp::EndsWith };
                    self.i += 1;
                    if !self.is_word("with") {
                        return self.err("expected \"with\"");
                    }
                    op
                }
                _ => {
                    return self.err(
                        "expected an operator (==, !=, <, <=, >, >=, contains, starts with, ends with, is empty, is not empty)",
                    );
                }
            };
            self.i += 1;
            let lit = match self.peek() {
                Some(Tok::Str(s)) => Value::Text(s.clone()),
                Some(Tok::Num(n)) => Value::Number(*n),
                Some(Tok::Ident(w)) if w == "true" => Value::Bool(true),
                Some(Tok::Ident(w)) if w == "false" => Value::Bool(false),
                Some(Tok::Ident(_)) => {
                    return self.err("expected a literal (text must be in double quotes)");
                }
                _ => return self.err("expected a literal"),
            };
            self.i += 1;
            Op::Compare(cmp, lit)
        };
        Ok(Expr::Test(Test { var, column, op }))
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "and" | "or" | "not" | "is" | "empty" | "contains" | "starts" | "ends" | "with" | "true" | "false")
}

/// Parses a `when` condition.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut toks = Vec::new();
    while let Some(t) = lexer.next()? {
        toks.push(t);
    }
    let end_col = src.chars().count() + 1;
    let mut p = Parser { toks, i: 0, end_col };
    let e = p.expr()?;
    if p.i < p.toks.len() {
        return p.err("expected \"and\", \"or\" or the end");
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn eval(src: &str, vars: &[(&str, Value)]) -> bool {
        let ctx: BTreeMap<String, Value> = vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        parse(src).unwrap().eval(&|k| ctx.get(k))
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn evaluation_table() {
        let n = Value::Number;
        type Case<'a> = (&'a str, Vec<(&'a str, Value)>, bool);
        let cases: Vec<Case> = vec![
            ("BotHandoffTopic is empty", vec![], true),
            ("BotHandoffTopic is empty", vec![("BotHandoffTopic", t(""))], true),
            ("BotHandoffTopic is empty", vec![("BotHandoffTopic", t("x"))], false),
            ("BotHandoffTopic is not empty", vec![("BotHandoffTopic", t("x"))], true),
            (r#"BotHandoffTopic == "CreditCard""#, vec![("BotHandoffTopic", t("CreditCard"))], true),
            (r#"BotHandoffTopic == "CreditCard""#, vec![("BotHandoffTopic", t("creditcard"))], false),
            (r#"T != "a""#, vec![], false),
            (r#"not T == "a""#, vec![], true),
            ("Age >= 18", vec![("Age", n(18.0))], true),
            ("Age < 18", vec![("Age", n(18.0))], false),
            ("Age > -1.5", vec![("Age", n(0.0))], true),
            (r#"T contains "ard""#, vec![("T", t("CreditCard"))], true),
            (r#"T starts with "Cred""#, vec![("T", t("CreditCard"))], true),
            (r#"T ends with "Card""#, vec![("T", t("CreditCard"))], true),
            (r#"T ends with "card""#, vec![("T", t("CreditCard"))], false),
            ("V == true", vec![("V", Value::Bool(true))], true),
            (r#"A == "1" or B == "2" and C == "3""#, vec![("A", t("1"))], true),
            (r#"(A == "1" or B == "2") and C == "3""#, vec![("A", t("1"))], false),
            (r#"not (A is empty) and A == "é👋""#, vec![("A", t("é👋"))], true),
        ];
        for (src, vars, want) in cases {
            assert_eq!(eval(src, &vars), want, "{src}");
        }
    }

    #[test]
    fn error_columns() {
        let cases = [
            ("", 1, "expected a variable name"),
            ("A ==", 5, "expected a literal"),
            ("A == CreditCard", 6, "double quotes"),
            ("A = \"x\"", 3, "did you mean"),
            ("A is full", 6, "expected \"empty\""),
            ("(A is empty", 12, "expected \")\""),
            ("A is empty B", 12, "expected \"and\""),
            ("A starts \"x\"", 10, "expected \"with\""),
            ("A == \"x", 6, "unterminated"),
            ("and == 1", 1, "expected a variable name"),
        ];
        for (src, col, msg) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!(e.column, col, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
        }
    }
}
