//! `lastword ls`, `show`, `stats` and `purge`: look into a spool. Tables for people, `--json` for
//! scripts.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use lastword::spool::{EntryId, EntryState, FLAG_RAW_SIGNAL, FLAG_UNSYMBOLIZED, Kind, Purge, SpoolView};
use lastword_collector::crash_view::CrashView;

use crate::exit;
use crate::spool_arg::SpoolArg;

/// `lastword ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    spool: SpoolArg,
    /// Only entries of this kind (crash, event, log).
    #[arg(long)]
    kind: Option<Kind>,
    /// Only entries in this state (writing, ready, claimed, quarantined).
    #[arg(long)]
    state: Option<EntryState>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// `lastword show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    spool: SpoolArg,
    /// The entry's id (as `ls` prints it).
    id: EntryId,
    /// JSON instead of text: the entry's facts and its whole body.
    #[arg(long)]
    json: bool,
    /// Every frame of a crash, not only the application's (the others are folded to one line).
    #[arg(long)]
    all: bool,
}

/// `lastword stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    spool: SpoolArg,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `lastword purge`: delete entries on purpose. Without --yes, only shows what it would delete.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["id", "older_than", "quarantined"])))]
pub struct PurgeArgs {
    #[command(flatten)]
    spool: SpoolArg,
    /// The entry with this id (ready or quarantined; never one claimed by a live agent).
    #[arg(long)]
    id: Option<EntryId>,
    /// Ready and quarantined entries at least this old (e.g. 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Every quarantined file.
    #[arg(long)]
    quarantined: bool,
    /// Really delete.
    #[arg(long)]
    yes: bool,
}

fn open(spool: &SpoolArg) -> Result<SpoolView> {
    spool.view()
}

/// `lastword ls`.
pub fn ls(args: &LsArgs) -> Result<u8> {
    let view = open(&args.spool)?;
    let items: Vec<_> = view
        .list()?
        .into_iter()
        .filter(|i| args.kind.is_none_or(|k| i.kind == Some(k)))
        .filter(|i| args.state.is_none_or(|s| i.state == s))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(exit::OK);
    }
    let now = now_millis();
    println!("{:<26}  {:<5}  {:<11}  {:>9}  {:>8}  NOTE", "ID", "KIND", "STATE", "SIZE", "AGE");
    for i in &items {
        let id = i.id.map_or_else(|| i.file_name.clone(), |id| id.to_string());
        let kind = i.kind.map_or("?", Kind::as_str);
        let age = i.created_millis.map_or_else(|| "?".into(), |c| age(now.saturating_sub(c)));
        let note = i.reason.clone().unwrap_or_default();
        println!("{id:<26}  {kind:<5}  {:<11}  {:>9}  {age:>8}  {note}", i.state.as_str(), bytes(i.size));
    }
    if items.is_empty() {
        println!("(no entries)");
    }
    Ok(exit::OK)
}

/// `lastword show`.
pub fn show(args: &ShowArgs) -> Result<u8> {
    let view = open(&args.spool)?;
    let entry = view.read(args.id)?;
    // A raw signal report or a panic's raw capture is shown the way it will be uploaded: symbolized.
    let body_json: Option<serde_json::Value> =
        if entry.header.kind == lastword::spool::Kind::Event && entry.header.flags & FLAG_UNSYMBOLIZED != 0 {
            // An event's raw capture, symbolized and fingerprinted as it will be when uploaded.
            lastword::symbolize::readable_event(entry.header.flags, &entry.body)
                .and_then(|e| serde_json::to_value(e).ok())
        } else if entry.header.flags & (FLAG_RAW_SIGNAL | FLAG_UNSYMBOLIZED) != 0 {
            lastword::symbolize::readable(entry.header.flags, &entry.body)
                .and_then(|r| serde_json::to_value(r).ok())
        } else {
            serde_json::from_slice(&entry.body).ok()
        };
    if args.json {
        let out = serde_json::json!({
            "id": entry.header.id,
            "kind": entry.header.kind,
            "state": entry.listed.state,
            "created_ms": entry.header.created_millis,
            "flags": entry.header.flags,
            "size": entry.listed.size,
            "body": body_json.clone().unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(&entry.body).into_owned())),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(exit::OK);
    }
    println!("id:       {}", entry.header.id);
    println!("kind:     {}", entry.header.kind);
    println!("state:    {}", entry.listed.state.as_str());
    println!("age:      {}", age(now_millis().saturating_sub(entry.header.created_millis)));
    println!("size:     {}", bytes(entry.listed.size));
    if entry.header.flags & FLAG_RAW_SIGNAL != 0 {
        println!("note:     raw signal report, symbolized here as it will be when uploaded");
    } else if entry.header.flags & FLAG_UNSYMBOLIZED != 0 {
        println!("note:     raw panic capture, symbolized here as it will be when uploaded");
    }
    let crash = (entry.header.kind == Kind::Crash).then(|| body_json.as_ref().and_then(CrashView::from_json));
    match (crash.flatten(), body_json) {
        (Some(view), _) => print!("\n{}", view.to_text(args.all)),
        (None, Some(v)) => println!("{}", serde_json::to_string_pretty(&v)?),
        (None, None) => println!("({} bytes of binary body)", entry.body.len()),
    }
    Ok(exit::OK)
}

/// `lastword stats`.
pub fn stats(args: &StatsArgs) -> Result<u8> {
    let view = open(&args.spool)?;
    let stats = view.stats()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(exit::OK);
    }
    println!("spool {}", view.path().display());
    println!("{:<12} {:>8} {:>10}   by kind", "STATE", "ENTRIES", "BYTES");
    for (state, total) in &stats.totals {
        let kinds: Vec<String> = stats
            .by_state
            .get(state)
            .map(|m| m.iter().map(|(k, c)| format!("{k} {}", c.entries)).collect())
            .unwrap_or_default();
        println!(
            "{:<12} {:>8} {:>10}   {}",
            state.as_str(),
            total.entries,
            bytes(total.bytes),
            kinds.join(", ")
        );
    }
    if stats.totals.is_empty() {
        println!("(empty)");
    }
    if let Some(a) = stats.oldest_ready_age_millis {
        println!("oldest ready entry: {}", age(a));
    }
    println!("evicted by limits, ever: {}", stats.evicted);
    println!("sessions: {}", stats.sessions);
    Ok(exit::OK)
}

/// `lastword purge`.
pub fn purge(args: &PurgeArgs) -> Result<u8> {
    let what = match (args.id, args.older_than, args.quarantined) {
        (Some(id), _, _) => Purge::Id(id),
        (_, Some(d), _) => Purge::OlderThan(d),
        (_, _, true) => Purge::Quarantined,
        _ => bail!("say what to purge: --id, --older-than or --quarantined"),
    };
    let view = open(&args.spool)?;
    if let Purge::Id(id) = what
        && !view.list()?.iter().any(|i| i.id == Some(id))
    {
        bail!("no entry {id} in the spool {} (`lastword ls` lists what is there)", view.path().display());
    }
    if !args.yes {
        let now = now_millis();
        let chosen: Vec<_> = view
            .list()?
            .into_iter()
            .filter(|i| match what {
                Purge::Id(id) => i.id == Some(id) && i.state != EntryState::Claimed,
                Purge::OlderThan(d) => {
                    matches!(i.state, EntryState::Ready | EntryState::Quarantined)
                        && i.created_millis.is_some_and(|c| now.saturating_sub(c) >= d.as_millis() as u64)
                }
                Purge::Quarantined => i.state == EntryState::Quarantined,
            })
            .collect();
        for i in &chosen {
            println!("would delete {} ({}, {})", i.file_name, i.state.as_str(), bytes(i.size));
        }
        println!("{} entries would be deleted; run again with --yes to delete them", chosen.len());
        return Ok(exit::OK);
    }
    let (spool, _) = args.spool.open_existing()?;
    let purged = spool.purge(&what)?;
    println!("deleted {} entries ({})", purged.entries, bytes(purged.bytes));
    if purged.skipped_claimed > 0 {
        println!("left {} entries that a live agent holds", purged.skipped_claimed);
    }
    Ok(exit::OK)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// "1.5 KiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// "3m12s".
pub fn age(millis: u64) -> String {
    let s = millis / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}
