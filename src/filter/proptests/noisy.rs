//! A printer that rewrites without changing meaning.

use crate::filter::{Predicate, Value};

/// Writes a predicate in a random but equivalent spelling: shuffled and
/// duplicated operands and `in` items, redundant parentheses, double
/// negation, random whitespace and keyword case, alternative literal forms.
pub(super) struct Noisy {
    state: u64,
    pub(super) out: String,
}

impl Noisy {
    pub(super) fn new(seed: u64) -> Self {
        Noisy {
            state: seed | 1,
            out: String::new(),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic from the proptest-chosen seed, so
        // failures shrink and replay.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        let i = (self.next() % options.len() as u64) as usize;
        options.get(i).copied().unwrap_or("")
    }

    fn ws(&mut self) {
        let w = self.pick(&["", "", " ", "  ", "\t", "\n", " \r\n "]);
        self.out.push_str(w);
    }

    fn ws1(&mut self) {
        let w = self.pick(&[" ", " ", "  ", "\t", "\n", " \r\n "]);
        self.out.push_str(w);
    }

    fn kw(&mut self, kw: &str) {
        let spelled = match self.next() % 3 {
            0 => kw.to_string(),
            1 => kw.to_uppercase(),
            _ => {
                let mut c = kw.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
        };
        self.out.push_str(&spelled);
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }

    fn maybe_duplicate<T: Clone>(&mut self, v: &mut Vec<T>) {
        if !v.is_empty() && self.one_in(3) {
            let i = (self.next() % v.len() as u64) as usize;
            if let Some(x) = v.get(i).cloned() {
                v.push(x);
            }
        }
    }

    pub(super) fn predicate(&mut self, p: &Predicate) {
        if self.one_in(5) {
            self.out.push('(');
            self.ws();
            self.predicate(p);
            self.ws();
            self.out.push(')');
            return;
        }
        if self.one_in(6) {
            self.kw("not");
            self.ws1();
            self.kw("not");
            self.ws();
            self.out.push('(');
            self.predicate(p);
            self.out.push(')');
            return;
        }
        match p {
            Predicate::And(ops) => self.n_ary(ops, "and"),
            Predicate::Or(ops) => self.n_ary(ops, "or"),
            Predicate::Not(inner) => {
                self.kw("not");
                self.ws1();
                self.operand(inner);
            }
            Predicate::Compare { field, op, value } => {
                self.out.push_str(field);
                self.ws();
                self.out.push_str(crate::filter::ast::compare_op_str(*op));
                self.ws();
                self.value(value);
            }
            Predicate::In {
                field,
                negated,
                values,
            } => {
                self.out.push_str(field);
                self.ws1();
                if *negated {
                    self.kw("not");
                    self.ws1();
                }
                self.kw("in");
                self.ws();
                self.out.push('(');
                let mut values = values.clone();
                self.maybe_duplicate(&mut values);
                self.shuffle(&mut values);
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.ws();
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(v);
                }
                self.ws();
                self.out.push(')');
            }
            Predicate::Regex {
                field,
                negated,
                pattern,
            } => {
                self.out.push_str(field);
                self.ws();
                self.out.push_str(if *negated { "!~" } else { "~" });
                self.ws();
                self.string(pattern);
            }
            Predicate::Contains { field, needle } => {
                self.out.push_str(field);
                self.ws1();
                self.kw("contains");
                self.ws();
                self.string(needle);
            }
        }
    }

    /// An operand of `and`/`or`/`not`: compound ones need parentheses.
    fn operand(&mut self, p: &Predicate) {
        if matches!(p, Predicate::And(_) | Predicate::Or(_)) {
            self.out.push('(');
            self.predicate(p);
            self.out.push(')');
        } else {
            self.predicate(p);
        }
    }

    fn n_ary(&mut self, ops: &[Predicate], kw: &str) {
        let mut ops = ops.to_vec();
        self.maybe_duplicate(&mut ops);
        self.shuffle(&mut ops);
        for (i, op) in ops.iter().enumerate() {
            if i > 0 {
                self.ws1();
                self.kw(kw);
                self.ws1();
            }
            self.operand(op);
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.string(s),
            Value::Integer(i) => self.out.push_str(&i.to_string()),
            Value::Float(f) => {
                let text = match self.next() % 3 {
                    0 => format!("{f:e}"),
                    1 if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
                    _ => format!("{f:?}"),
                };
                self.out.push_str(&text);
            }
            Value::Boolean(b) => self.kw(if *b { "true" } else { "false" }),
            Value::Time(micros) => {
                let offset_secs = [0, 3600, -5 * 3600 - 1800, 14 * 3600];
                let i = (self.next() % 4) as usize;
                let offset =
                    chrono::FixedOffset::east_opt(offset_secs.get(i).copied().unwrap_or(0));
                let t = chrono::DateTime::from_timestamp_micros(*micros);
                let text = match (t, offset) {
                    (Some(t), Some(o)) => t
                        .with_timezone(&o)
                        .format("%Y-%m-%dT%H:%M:%S%.f%:z")
                        .to_string(),
                    _ => String::new(),
                };
                self.out.push('"');
                self.out.push_str(&text);
                self.out.push('"');
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if self.one_in(2) => self.out.push_str("\\n"),
                c if self.one_in(4) => {
                    let hex = if self.one_in(2) {
                        format!("{:x}", u32::from(c))
                    } else {
                        format!("{:04X}", u32::from(c))
                    };
                    self.out.push_str(&format!("\\u{{{hex}}}"));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}
