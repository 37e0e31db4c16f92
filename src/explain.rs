//! `pseudostream explain '<filter>'`: the canonical form and fingerprint of
//! a filter, as the service would compute them, for debugging dedup. A
//! relative range (`--last`) shows the fingerprint every refresh of it
//! shares, and the ends it resolves to now.

use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::Config;
use crate::filter::time_range::{self, HumanDuration};
use crate::filter::{self, FingerprintInput, Limits, Order, RangeKey, RegexCache};
use crate::source::{ParquetSource, QueryRuntime, QuerySource};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The filter text.
    pub filter: String,
    /// Tenant the fingerprint is computed for.
    #[arg(long, default_value = "dev")]
    pub tenant: String,
    /// Range start (RFC 3339); with --to. Default: `--last 24h`.
    #[arg(long, requires = "to", conflicts_with = "last")]
    pub from: Option<DateTime<Utc>>,
    #[arg(long, requires = "from", conflicts_with = "last")]
    pub to: Option<DateTime<Utc>>,
    /// A relative range, e.g. `7d`: fingerprinted by this expression, so
    /// every refresh of it shares one fingerprint.
    #[arg(long)]
    pub last: Option<String>,
    /// Comma-separated fields to return (default: all).
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    #[arg(long, value_enum, default_value = "desc")]
    pub order: OrderArg,
    #[arg(long)]
    pub max_rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OrderArg {
    Asc,
    Desc,
}

impl From<OrderArg> for Order {
    fn from(order: OrderArg) -> Order {
        match order {
            OrderArg::Asc => Order::Asc,
            OrderArg::Desc => Order::Desc,
        }
    }
}

pub async fn run(config: &Config, args: &ExplainArgs) -> anyhow::Result<()> {
    let location = match &config.source {
        Some(s) => s.clone(),
        None => config.data_dir.join("demo").to_string_lossy().into_owned(),
    };
    // Explain runs no query; the source wants a runtime all the same.
    let runtime = QueryRuntime::new(1)?;
    let source = ParquetSource::open(&location, &config.time_column, &runtime).await.map_err(|e| {
        anyhow::anyhow!("{e}\n(explain reads the source's schema; run `pseudostream` once to generate the demo data, or pass --source)")
    })?;
    let compiled = match filter::compile(
        &args.filter,
        source.schema(),
        &Limits::default(),
        &RegexCache::default(),
    ) {
        Ok(f) => f,
        Err(e) => anyhow::bail!("{e}"),
    };
    let rfc3339 = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    let (from, to) = (rfc3339(args.from), rfc3339(args.to));
    let last = match (&from, &args.last) {
        (None, None) => Some("24h"),
        (_, last) => last.as_deref(),
    };
    let range = time_range::resolve(
        from.as_deref(),
        to.as_deref(),
        last,
        Utc::now(),
        config.max_time_range,
    )?;
    let mut fields: Vec<String> = Vec::new();
    for field in &args.fields {
        if !fields.contains(field) {
            fields.push(field.clone());
        }
    }
    let order = Order::from(args.order);
    let fingerprint = FingerprintInput {
        tenant: &args.tenant,
        source: source.id(),
        schema_version: source.schema_version(),
        filter: &compiled,
        range: RangeKey::from(&range),
        fields: &fields,
        order,
        max_rows: args.max_rows.unwrap_or(config.max_rows),
    }
    .fingerprint();
    let ends = format!(
        "{} to {}",
        time_range::micros_rfc3339(range.from_us),
        time_range::micros_rfc3339(range.to_us)
    );
    println!("canonical:   {}", compiled.canonical());
    match range.last {
        Some(span) => println!(
            "range:       last {} (now {ends}); shared with a live job of the same fingerprint while its end is at most maxStaleness old (default {})",
            HumanDuration(span),
            HumanDuration(config.max_staleness)
        ),
        None => println!("range:       {ends} (absolute: only the same ends share)"),
    }
    println!("fingerprint: {fingerprint}");
    println!("predicate:   {:?}", compiled.predicate());
    Ok(())
}
