//! `pseudostream explain '<filter>'`: the canonical form and fingerprint of
//! a filter, as the service would compute them, for debugging dedup.

use chrono::{DateTime, Utc};
use clap::Args;

use crate::config::Config;
use crate::filter::{self, FingerprintInput, Limits, Order, RegexCache};
use crate::source::{ParquetSource, QueryRuntime, QuerySource};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The filter text.
    pub filter: String,
    /// Tenant the fingerprint is computed for.
    #[arg(long, default_value = "dev")]
    pub tenant: String,
    /// Range start (RFC 3339); with --to. Default: the 24 hours before now.
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
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
    let to = args.to.unwrap_or_else(Utc::now);
    let from = args
        .from
        .or_else(|| to.checked_sub_signed(chrono::TimeDelta::hours(24)))
        .unwrap_or(to);
    let mut fields: Vec<String> = Vec::new();
    for field in &args.fields {
        if !fields.contains(field) {
            fields.push(field.clone());
        }
    }
    let order = match args.order {
        OrderArg::Asc => Order::Asc,
        OrderArg::Desc => Order::Desc,
    };
    let fingerprint = FingerprintInput {
        tenant: &args.tenant,
        source: source.id(),
        schema_version: source.schema_version(),
        filter: &compiled,
        from_us: from.timestamp_micros(),
        to_us: to.timestamp_micros(),
        fields: &fields,
        order,
        max_rows: args.max_rows.unwrap_or(config.max_rows),
    }
    .fingerprint();
    println!("canonical:   {}", compiled.canonical());
    println!("fingerprint: {fingerprint}");
    println!("predicate:   {:?}", compiled.predicate());
    Ok(())
}
