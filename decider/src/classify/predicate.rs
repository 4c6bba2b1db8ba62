//! Always-true WHERE clauses: a small constant evaluator that recognises the
//! shapes used to dress up an unrestricted UPDATE or DELETE (`1=1`, `'a'='a'`,
//! `x = x`, `NOT false`, `... OR true`). It answers "always true" only when it is
//! sure; anything it cannot evaluate counts as selective.

use sqlparser::ast::{BinaryOperator, DataType, Expr, SetExpr, UnaryOperator, Value};

use super::names;

/// How deep the evaluator follows nested expressions other than AND/OR chains
/// (which it flattens without recursion). The parser already refuses deeper
/// parenthesis nesting, so this is only a guard.
const MAX_DEPTH: usize = 128;

/// True when `predicate` holds for every row PostgreSQL could apply it to.
pub(super) fn always_true(predicate: &Expr) -> bool {
    truthy(&eval(predicate, 0)) == Some(true)
}

/// What a sub-expression is known to be.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bool(bool),
    Num(f64),
    /// A string literal: PostgreSQL's "unknown" type, coerced by context.
    Str(String),
    Null,
    /// A column reference, by its folded, dotted name.
    Column(String),
    Unknown,
}

/// The boolean a value stands for in a WHERE clause.
fn truthy(v: &Val) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(*b),
        Val::Str(s) => parse_bool(s),
        _ => None,
    }
}

/// PostgreSQL's `boolin`: `t`, `true`, `yes`, `on`, `1` and their unique prefixes.
fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    if "true".starts_with(&s) || "yes".starts_with(&s) || s == "on" || s == "1" {
        Some(true)
    } else if "false".starts_with(&s) || "no".starts_with(&s) || s == "off" || s == "0" {
        Some(false)
    } else {
        None
    }
}

fn literal(v: &Value) -> Val {
    match v {
        Value::Boolean(b) => Val::Bool(*b),
        Value::Null => Val::Null,
        Value::Number(n, _) => n.parse().map(Val::Num).unwrap_or(Val::Unknown),
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s) => Val::Str(s.clone()),
        Value::DollarQuotedString(d) => Val::Str(d.value.clone()),
        _ => Val::Unknown,
    }
}

fn eval(e: &Expr, depth: usize) -> Val {
    if depth > MAX_DEPTH {
        return Val::Unknown;
    }
    let d = depth + 1;
    match e {
        Expr::Value(v) => literal(&v.value),
        Expr::Identifier(id) => Val::Column(names::ident(id)),
        Expr::CompoundIdentifier(ids) => {
            Val::Column(ids.iter().map(names::ident).collect::<Vec<_>>().join("."))
        }
        Expr::Nested(inner) => eval(inner, d),
        Expr::UnaryOp { op, expr } => match (op, eval(expr, d)) {
            (UnaryOperator::Not, v) => truthy(&v).map_or(Val::Unknown, |b| Val::Bool(!b)),
            (UnaryOperator::Minus, Val::Num(n)) => Val::Num(-n),
            (UnaryOperator::Plus, Val::Num(n)) => Val::Num(n),
            _ => Val::Unknown,
        },
        Expr::Cast {
            expr, data_type, ..
        } => cast(eval(expr, d), data_type),
        Expr::TypedString(t) => cast(literal(&t.value.value), &t.data_type),
        Expr::BinaryOp { op, .. } if matches!(op, BinaryOperator::And | BinaryOperator::Or) => {
            chain(e, op, d)
        }
        Expr::BinaryOp { left, op, right } => binary(eval(left, d), op, eval(right, d)),
        Expr::IsTrue(x) => is(eval(x, d), |b| b == Some(true)),
        Expr::IsNotTrue(x) => is(eval(x, d), |b| b != Some(true)),
        Expr::IsFalse(x) => is(eval(x, d), |b| b == Some(false)),
        Expr::IsNotFalse(x) => is(eval(x, d), |b| b != Some(false)),
        Expr::IsNull(x) => match eval(x, d) {
            Val::Null => Val::Bool(true),
            Val::Bool(_) | Val::Num(_) | Val::Str(_) => Val::Bool(false),
            _ => Val::Unknown,
        },
        Expr::IsNotNull(x) => match eval(x, d) {
            Val::Null => Val::Bool(false),
            Val::Bool(_) | Val::Num(_) | Val::Str(_) => Val::Bool(true),
            _ => Val::Unknown,
        },
        Expr::IsNotDistinctFrom(a, b) => not_distinct(eval(a, d), eval(b, d)),
        Expr::IsDistinctFrom(a, b) => match not_distinct(eval(a, d), eval(b, d)) {
            Val::Bool(x) => Val::Bool(!x),
            _ => Val::Unknown,
        },
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => match (eval(expr, d), eval(low, d), eval(high, d)) {
            (Val::Num(x), Val::Num(lo), Val::Num(hi)) => {
                Val::Bool((lo <= x && x <= hi) != *negated)
            }
            _ => Val::Unknown,
        },
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::List(list),
            negated,
            ..
        } => {
            let x = eval(expr, d);
            let mut found = false;
            for item in list {
                match compare(&x, &BinaryOperator::Eq, &eval(item, d)) {
                    Val::Bool(true) => found = true,
                    Val::Bool(false) => {}
                    _ => return Val::Unknown,
                }
            }
            // `x IN (1, x)`: true, but `x NOT IN (...)` with an unknown member is not
            // decidable; only the positive, fully-known forms count.
            Val::Bool(found != *negated)
        }
        Expr::Exists { subquery, negated } => {
            // `EXISTS (SELECT 1)`: a row-less SELECT always yields exactly one row.
            let constant = match subquery.body.as_ref() {
                SetExpr::Select(s) => {
                    s.from.is_empty()
                        && s.selection.is_none()
                        && s.having.is_none()
                        && subquery.limit_clause.is_none()
                        && subquery.fetch.is_none()
                        && subquery.with.is_none()
                }
                _ => false,
            };
            if constant {
                Val::Bool(!negated)
            } else {
                Val::Unknown
            }
        }
        _ => Val::Unknown,
    }
}

/// `IS [NOT] TRUE|FALSE`: known only when the operand is a constant (a null
/// operand is neither true nor false).
fn is(operand: Val, test: impl Fn(Option<bool>) -> bool) -> Val {
    match operand {
        Val::Bool(_) | Val::Str(_) | Val::Null => Val::Bool(test(truthy(&operand))),
        _ => Val::Unknown,
    }
}

/// AND/OR chains, flattened with an explicit stack so that `a OR b OR ... OR true`
/// of any length is evaluated without recursing once per operand.
fn chain(e: &Expr, op: &BinaryOperator, depth: usize) -> Val {
    let mut operands = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            Expr::Nested(inner) if matches!(inner.as_ref(), Expr::BinaryOp { op: o, .. } if o == op) => {
                stack.push(inner)
            }
            other => operands.push(other),
        }
    }
    let values: Vec<Option<bool>> = operands.iter().map(|x| truthy(&eval(x, depth))).collect();
    match op {
        BinaryOperator::Or => {
            if values.contains(&Some(true)) || null_or_not_null(&operands) {
                Val::Bool(true)
            } else if values.iter().all(|v| *v == Some(false)) {
                Val::Bool(false)
            } else {
                Val::Unknown
            }
        }
        _ => {
            if values.contains(&Some(false)) {
                Val::Bool(false)
            } else if values.iter().all(|v| *v == Some(true)) {
                Val::Bool(true)
            } else {
                Val::Unknown
            }
        }
    }
}

/// `x IS NULL OR x IS NOT NULL` among the operands of an OR.
fn null_or_not_null(operands: &[&Expr]) -> bool {
    let column = |x: &Expr| match eval(x, 0) {
        Val::Column(c) => Some(c),
        _ => None,
    };
    let nulls: Vec<String> = operands
        .iter()
        .filter_map(|o| match o {
            Expr::IsNull(x) => column(x),
            _ => None,
        })
        .collect();
    operands.iter().any(|o| match o {
        Expr::IsNotNull(x) => column(x).is_some_and(|c| nulls.contains(&c)),
        _ => false,
    })
}

fn not_distinct(a: Val, b: Val) -> Val {
    match (&a, &b) {
        (Val::Column(x), Val::Column(y)) if x == y => Val::Bool(true),
        (Val::Null, Val::Null) => Val::Bool(true),
        (Val::Null, Val::Bool(_) | Val::Num(_) | Val::Str(_))
        | (Val::Bool(_) | Val::Num(_) | Val::Str(_), Val::Null) => Val::Bool(false),
        _ => compare(&a, &BinaryOperator::Eq, &b),
    }
}

fn binary(l: Val, op: &BinaryOperator, r: Val) -> Val {
    match op {
        BinaryOperator::Eq
        | BinaryOperator::NotEq
        | BinaryOperator::Lt
        | BinaryOperator::LtEq
        | BinaryOperator::Gt
        | BinaryOperator::GtEq => compare(&l, op, &r),
        BinaryOperator::Plus | BinaryOperator::Minus | BinaryOperator::Multiply => {
            match (number(&l), number(&r)) {
                (Some(a), Some(b)) => Val::Num(match op {
                    BinaryOperator::Plus => a + b,
                    BinaryOperator::Minus => a - b,
                    _ => a * b,
                }),
                _ => Val::Unknown,
            }
        }
        BinaryOperator::StringConcat => match (l, r) {
            (Val::Str(a), Val::Str(b)) => Val::Str(a + &b),
            _ => Val::Unknown,
        },
        _ => Val::Unknown,
    }
}

fn number(v: &Val) -> Option<f64> {
    match v {
        Val::Num(n) => Some(*n),
        Val::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(l: &Val, op: &BinaryOperator, r: &Val) -> Val {
    use std::cmp::Ordering;
    let ordering = match (l, r) {
        (Val::Null, _) | (_, Val::Null) => return Val::Null,
        // `x = x`: true wherever x is not null, which is what an unrestricted
        // UPDATE/DELETE written this way is after.
        (Val::Column(a), Val::Column(b)) if a == b => Some(Ordering::Equal),
        (Val::Num(_), _) | (_, Val::Num(_)) => match (number(l), number(r)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Val::Bool(_), _) | (_, Val::Bool(_)) => match (truthy(l), truthy(r)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        },
        // Strings compare equal or not whatever the collation; their order depends on it.
        (Val::Str(a), Val::Str(b)) => match op {
            BinaryOperator::Eq | BinaryOperator::NotEq => Some(if a == b {
                Ordering::Equal
            } else {
                Ordering::Less
            }),
            _ => None,
        },
        _ => None,
    };
    let Some(o) = ordering else {
        return Val::Unknown;
    };
    Val::Bool(match op {
        BinaryOperator::Eq => o == Ordering::Equal,
        BinaryOperator::NotEq => o != Ordering::Equal,
        BinaryOperator::Lt => o == Ordering::Less,
        BinaryOperator::LtEq => o != Ordering::Greater,
        BinaryOperator::Gt => o == Ordering::Greater,
        BinaryOperator::GtEq => o != Ordering::Less,
        _ => return Val::Unknown,
    })
}

fn cast(v: Val, to: &DataType) -> Val {
    match to {
        DataType::Bool | DataType::Boolean => match v {
            Val::Bool(_) => v,
            Val::Str(ref s) => parse_bool(s).map_or(Val::Unknown, Val::Bool),
            // int → boolean: zero is false, anything else true.
            Val::Num(n) if n.fract() == 0.0 => Val::Bool(n != 0.0),
            Val::Null => Val::Null,
            _ => Val::Unknown,
        },
        DataType::Int(_)
        | DataType::Int2(_)
        | DataType::Int4(_)
        | DataType::Int8(_)
        | DataType::Integer(_)
        | DataType::SmallInt(_)
        | DataType::BigInt(_)
        | DataType::Numeric(_)
        | DataType::Decimal(_)
        | DataType::Real
        | DataType::Float4
        | DataType::Float8
        | DataType::Double(_)
        | DataType::Float(_) => match v {
            Val::Null => Val::Null,
            other => number(&other).map_or(Val::Unknown, Val::Num),
        },
        DataType::Text | DataType::Varchar(_) | DataType::CharacterVarying(_) => match v {
            Val::Str(_) | Val::Null => v,
            _ => Val::Unknown,
        },
        _ => Val::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn holds(predicate: &str) -> bool {
        let expr = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(predicate)
            .and_then(|mut p| p.parse_expr())
            .unwrap_or_else(|e| panic!("{predicate}: {e}"));
        always_true(&expr)
    }

    #[test]
    fn tautologies_are_caught() {
        for p in [
            "true",
            "TRUE",
            "'t'",
            "'yes'",
            "'on'",
            "1 = 1",
            "(1 = 1)",
            "((1) = (1))",
            "'a' = 'a'",
            "x = x",
            "t.x = T.X",
            "x IS NOT DISTINCT FROM x",
            "NOT false",
            "NOT NOT true",
            "NOT (1 = 2)",
            "1 < 2",
            "2 >= 2",
            "1 <> 2",
            "'a' <> 'b'",
            "id = 5 OR true",
            "true OR id = 5",
            "true AND true",
            "1 = 1 AND 2 = 2",
            "1::boolean",
            "'true'::boolean",
            "CAST('1' AS int) = 1",
            "1 = '1'",
            "1 = 1.0",
            "1 + 1 = 2",
            "-1 < 0",
            "1 BETWEEN 0 AND 2",
            "1 IN (1, 2)",
            "true IS TRUE",
            "NULL IS NULL",
            "1 IS NOT NULL",
            "x IS NULL OR x IS NOT NULL",
            "EXISTS (SELECT 1)",
            "'a' || 'b' = 'ab'",
            "bool 't'",
            "id = 1 OR id = 2 OR 1 = 1 OR id = 3",
        ] {
            assert!(holds(p), "{p} should be always true");
        }
    }

    #[test]
    fn selective_or_unknown_predicates_are_not() {
        for p in [
            "id = 1",
            "id = $1",
            "x = y",
            "t.x = u.x",
            "false",
            "'f'",
            "'maybe'",
            "1 = 2",
            "NOT true",
            "x <> x",
            "id = 5 AND true",
            "true AND id = 5",
            "NULL = NULL",
            "NULL",
            "x IS NULL",
            "'b' > 'a'",
            "coalesce(true, false)",
            "EXISTS (SELECT 1 FROM t)",
            "EXISTS (SELECT 1 WHERE false)",
            "NOT EXISTS (SELECT 1)",
            "1 IN (2, x)",
            "f(x)",
            "x",
            "current_user = 'bob'",
        ] {
            assert!(!holds(p), "{p} should not count as always true");
        }
    }

    #[test]
    fn long_or_chains_do_not_recurse() {
        let p = format!("{} OR true", vec!["id = 1"; 5000].join(" OR "));
        assert!(holds(&p));
        let p = format!("true OR {}", vec!["id = 1"; 5000].join(" OR "));
        assert!(holds(&p));
    }
}
