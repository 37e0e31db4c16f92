//! Property tests for the whole pipeline: canonical text round-trips,
//! fingerprints ignore every meaning-preserving rewrite, and no input makes
//! the parser panic. Predicates are generated over the shared test schema.

use proptest::prelude::*;

use crate::filter::canonical::{canonicalize, print};
use crate::filter::validate::tests::test_schema;
use crate::filter::{
    CompareOp, Filter, FingerprintInput, Limits, Order, Predicate, Value, compile,
};

/// Generated predicates are small, but noise (parentheses, double negation)
/// multiplies depth; these limits keep the properties about canonical form,
/// not about limits.
fn roomy() -> Limits {
    Limits {
        max_length: 1 << 20,
        max_depth: 512,
        max_nodes: 100_000,
        ..Limits::default()
    }
}

fn compile_roomy(text: &str) -> Result<Filter, String> {
    compile(text, &test_schema(), &roomy()).map_err(|e| format!("{text:?}: {e}"))
}

// ---------- generators ----------

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

fn eq_ne() -> impl Strategy<Value = CompareOp> {
    prop_oneof![Just(CompareOp::Eq), Just(CompareOp::Ne)]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{0,3}",
        prop::collection::vec(any::<char>(), 0..6).prop_map(|v| v.into_iter().collect()),
    ]
}

/// 1900-01-01 .. 2200-01-01, so every time has a four-digit year in any offset.
fn time_value() -> impl Strategy<Value = i64> {
    -2_208_988_800_000_000i64..7_258_118_400_000_000i64
}

fn float_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        (-1000i32..1000).prop_map(|i| f64::from(i) / 4.0),
    ]
}

fn regex_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("^/api/v[12]/orders".to_string()),
        Just("(?i)error|warn".to_string()),
        Just("a+b*\\d{2}$".to_string()),
        string_value().prop_map(|s| regex::escape(&s)),
    ]
}

fn string_field() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("service"), Just("endpoint")]
}

fn cmp(field: &str, op: CompareOp, value: Value) -> Predicate {
    Predicate::Compare {
        field: field.to_string(),
        op,
        value,
    }
}

fn in_list(field: &str, negated: bool, values: Vec<Value>) -> Predicate {
    Predicate::In {
        field: field.to_string(),
        negated,
        values,
    }
}

fn leaf() -> impl Strategy<Value = Predicate> {
    use prop::collection::vec;
    prop_oneof![
        (compare_op(), time_value()).prop_map(|(op, t)| cmp("ts", op, Value::Time(t))),
        (any::<bool>(), vec(time_value(), 1..4)).prop_map(|(n, v)| in_list(
            "ts",
            n,
            v.into_iter().map(Value::Time).collect()
        )),
        (string_field(), compare_op(), string_value()).prop_map(|(f, op, s)| cmp(
            f,
            op,
            Value::String(s)
        )),
        (string_field(), any::<bool>(), vec(string_value(), 1..4)).prop_map(|(f, n, v)| in_list(
            f,
            n,
            v.into_iter().map(Value::String).collect()
        )),
        (string_field(), any::<bool>(), regex_pattern()).prop_map(|(f, negated, pattern)| {
            Predicate::Regex {
                field: f.to_string(),
                negated,
                pattern,
            }
        }),
        (string_field(), string_value()).prop_map(|(f, needle)| Predicate::Contains {
            field: f.to_string(),
            needle
        }),
        (compare_op(), any::<i64>()).prop_map(|(op, i)| cmp("status", op, Value::Integer(i))),
        (any::<bool>(), vec(prop_oneof![any::<i64>(), 0i64..4], 1..5)).prop_map(|(n, v)| {
            in_list("status", n, v.into_iter().map(Value::Integer).collect())
        }),
        (compare_op(), float_value()).prop_map(|(op, f)| cmp("latency_ms", op, Value::Float(f))),
        (any::<bool>(), vec(float_value(), 1..5)).prop_map(|(n, v)| in_list(
            "latency_ms",
            n,
            v.into_iter().map(Value::Float).collect()
        )),
        (eq_ne(), any::<bool>()).prop_map(|(op, b)| cmp("cached", op, Value::Boolean(b))),
        (any::<bool>(), vec(any::<bool>(), 1..4)).prop_map(|(n, v)| in_list(
            "cached",
            n,
            v.into_iter().map(Value::Boolean).collect()
        )),
    ]
}

fn predicate() -> impl Strategy<Value = Predicate> {
    leaf().prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Predicate::And),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Predicate::Or),
            inner.prop_map(|p| Predicate::Not(Box::new(p))),
        ]
    })
}

// ---------- a printer that rewrites without changing meaning ----------

/// Writes a predicate in a random but equivalent spelling: shuffled and
/// duplicated operands and `in` items, redundant parentheses, double
/// negation, random whitespace and keyword case, alternative literal forms.
struct Noisy {
    state: u64,
    out: String,
}

impl Noisy {
    fn new(seed: u64) -> Self {
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

    fn predicate(&mut self, p: &Predicate) {
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

fn fingerprint_of(filter: &Filter) -> crate::filter::Fingerprint {
    let fields = ["status".to_string(), "ts".to_string()];
    FingerprintInput {
        tenant: "t",
        source: "s",
        schema_version: "1",
        filter,
        from_us: 0,
        to_us: 10,
        fields: &fields,
        order: Order::Asc,
        max_rows: 10,
    }
    .fingerprint()
}

// ---------- properties ----------

const TOKENS: &[&str] = &[
    "(",
    ")",
    "and",
    "OR",
    "Not",
    "not",
    "in",
    "contains",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "~",
    "!~",
    ",",
    "status",
    "service",
    "endpoint",
    "ts",
    "cached",
    "latency_ms",
    "foo",
    "\"x\"",
    "\"",
    "\\",
    "\\u{",
    "}",
    "1",
    "-",
    "-7",
    "1.5",
    "1e",
    "2.5E-3",
    "99999999999999999999",
    "true",
    "FALSE",
    "\"2026-11-01T00:00:00Z\"",
    "\"(\"",
    "é",
    "\n",
    "\"日本\"",
    "\"a\\nb\"",
];

proptest! {
    #[test]
    fn canonical_text_round_trips(p in predicate()) {
        let canon = canonicalize(&p);
        let text = print(&canon);
        let compiled = compile_roomy(&text);
        prop_assert!(compiled.is_ok(), "{:?}", compiled.err());
        if let Ok(f) = compiled {
            prop_assert_eq!(f.predicate(), &canon, "text {:?}", text);
            prop_assert_eq!(f.canonical(), text.as_str());
        }
        prop_assert_eq!(canonicalize(&canon), canon);
    }

    #[test]
    fn equivalent_spellings_share_canonical_text_and_fingerprint(
        p in predicate(),
        seed in any::<u64>(),
    ) {
        let plain = compile_roomy(&print(&canonicalize(&p)));
        let mut noisy = Noisy::new(seed);
        noisy.predicate(&p);
        let rewritten = compile_roomy(&noisy.out);
        prop_assert!(plain.is_ok(), "{:?}", plain.as_ref().err());
        prop_assert!(rewritten.is_ok(), "{:?}", rewritten.as_ref().err());
        if let (Ok(a), Ok(b)) = (plain, rewritten) {
            prop_assert_eq!(a.canonical(), b.canonical(), "noisy text {:?}", noisy.out);
            prop_assert_eq!(fingerprint_of(&a), fingerprint_of(&b));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        check_total(&text);
    }

    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
        spaced in any::<bool>(),
    ) {
        let text = tokens.join(if spaced { " " } else { "" });
        check_total(&text);
    }
}

/// Any text either compiles — and then its canonical text compiles to the
/// same filter — or fails with a sane position, under roomy and tight limits.
fn check_total(text: &str) {
    let tight = Limits {
        max_length: 64,
        max_depth: 3,
        max_nodes: 6,
        max_in_list: 2,
        regex_size_limit: 10_000,
    };
    for limits in [Limits::default(), tight] {
        match compile(text, &test_schema(), &limits) {
            Ok(f) => {
                let again = compile(f.canonical(), &test_schema(), &roomy());
                assert_eq!(again.as_ref().ok(), Some(&f), "{text:?}");
            }
            Err(e) => {
                assert!(e.line >= 1 && e.column >= 1, "{text:?}: {e}");
                assert!(!e.message.is_empty());
            }
        }
    }
}
