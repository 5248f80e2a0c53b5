//! Metering and billing rules: usage intervals and price tables in, a month's bill out. Pure
//! (every time is unix ms passed in, all UTC), so the rules are unit-tested on a fake clock; the
//! store keeps the intervals and the history of price tables.

use dyno_shared::Size;
use dyno_shared::api::{
    AppBilling, BillingLine, BillingReport, DayCost, EcoPool, Pricing, SizePrice,
};
use dyno_shared::time::{civil_from_days, days_from_civil, iso_secs, rfc3339_micros};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: i64 = 86_400_000;
/// Heroku prices an hour at a thirtieth of a 24-hour month: monthly / 720.
const HOURS_PER_PRICED_MONTH: f64 = 720.0;

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("failed to read the coordinator config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid coordinator config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid pricing: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// A monthly price per size, charged per second at monthly/720 an hour, capped per dyno.
    Monthly,
    /// The 2011 model: one price per dyno-hour, the first hours of each app's month free.
    DynoHour,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Monthly => "monthly",
            Model::DynoHour => "dyno-hour",
        }
    }
}

/// A price table as it is recorded in the store (JSON) and applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    pub model: Model,
    pub currency: String,
    /// Size name -> monthly price (the `monthly` model).
    pub monthly: BTreeMap<String, f64>,
    /// Size name -> dyno-hours one hour of it counts as (the `dyno-hour` model).
    pub units: BTreeMap<String, f64>,
    pub eco_pool_hours: f64,
    pub eco_pool_price: f64,
    pub dyno_hour_price: f64,
    pub free_hours_per_app: f64,
}

impl PriceTable {
    /// HEROKU.md's sizes and prices.
    pub fn monthly_preset() -> PriceTable {
        PriceTable {
            model: Model::Monthly,
            currency: "USD".into(),
            monthly: Size::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), s.monthly_cents() as f64 / 100.0))
                .collect(),
            units: default_units(),
            eco_pool_hours: 1000.0,
            eco_pool_price: 5.0,
            dyno_hour_price: 0.05,
            free_hours_per_app: 750.0,
        }
    }

    /// 2011-2013: $0.05 a dyno-hour, 750 free dyno-hours per app and month.
    pub fn dyno_hour_preset() -> PriceTable {
        PriceTable {
            model: Model::DynoHour,
            ..PriceTable::monthly_preset()
        }
    }

    fn monthly_of(&self, size: Size) -> f64 {
        self.monthly.get(size.as_str()).copied().unwrap_or(0.0)
    }

    fn units_of(&self, size: Size) -> f64 {
        self.units.get(size.as_str()).copied().unwrap_or(1.0)
    }

    /// Cost of one hour of one dyno of `size` (eco: 0, its pool is paid per owner).
    pub fn hourly(&self, size: Size) -> f64 {
        match (size, self.model) {
            (Size::Eco, _) => 0.0,
            (_, Model::Monthly) => self.monthly_of(size) / HOURS_PER_PRICED_MONTH,
            (_, Model::DynoHour) => self.dyno_hour_price * self.units_of(size),
        }
    }

    /// The API's view of this table.
    pub fn to_api(&self, effective_from_ms: i64) -> Pricing {
        Pricing {
            model: self.model.as_str().to_string(),
            currency: self.currency.clone(),
            effective_from: iso_secs(effective_from_ms.div_euclid(1000)),
            sizes: Size::ALL
                .iter()
                .map(|&size| SizePrice {
                    size,
                    hourly: money(self.hourly(size)),
                    max_monthly: match (size, self.model) {
                        (Size::Eco, _) => Some(money(self.eco_pool_price)),
                        (_, Model::Monthly) => Some(money(self.monthly_of(size))),
                        (_, Model::DynoHour) => None,
                    },
                    units: self.units_of(size),
                })
                .collect(),
            eco_pool_hours: self.eco_pool_hours,
            eco_pool_price: self.eco_pool_price,
            dyno_hour_price: self.dyno_hour_price,
            free_hours_per_app: self.free_hours_per_app,
        }
    }
}

/// Dyno-hours per hour of each size in the 2011 model: a 512 MB dyno counts as one.
fn default_units() -> BTreeMap<String, f64> {
    Size::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), (s.memory_mb() / 512).max(1) as f64))
        .collect()
}

/// The coordinator's config file (TOML). Only pricing lives there so far.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    #[serde(default)]
    pub pricing: PricingConfig,
}

/// `[pricing]`: a preset, then any field of it overridden.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// `monthly` (default) or `dyno-hour`.
    pub preset: Option<Model>,
    pub currency: Option<String>,
    pub eco_pool_hours: Option<f64>,
    pub eco_pool_price: Option<f64>,
    pub dyno_hour_price: Option<f64>,
    pub free_hours_per_app: Option<f64>,
    /// `[pricing.monthly]`: size = monthly price.
    #[serde(default)]
    pub monthly: BTreeMap<String, f64>,
    /// `[pricing.units]`: size = dyno-hours per hour.
    #[serde(default)]
    pub units: BTreeMap<String, f64>,
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<CoordinatorConfig, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| PricingError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

impl PricingConfig {
    /// The preset with the overrides applied; every price and size name checked.
    pub fn resolve(&self) -> Result<PriceTable, PricingError> {
        let mut t = match self.preset.unwrap_or(Model::Monthly) {
            Model::Monthly => PriceTable::monthly_preset(),
            Model::DynoHour => PriceTable::dyno_hour_preset(),
        };
        if let Some(c) = &self.currency {
            if c.is_empty() || c.len() > 8 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                return Err(PricingError::Invalid(format!(
                    "currency {c:?} must be 1-8 letters, e.g. USD or EUR"
                )));
            }
            t.currency = c.to_ascii_uppercase();
        }
        let amount = |name: &str, v: Option<f64>, into: &mut f64| {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(PricingError::Invalid(format!(
                        "{name} = {v} must be a number of at least 0"
                    )));
                }
                *into = v;
            }
            Ok(())
        };
        amount("eco_pool_hours", self.eco_pool_hours, &mut t.eco_pool_hours)?;
        amount("eco_pool_price", self.eco_pool_price, &mut t.eco_pool_price)?;
        amount(
            "dyno_hour_price",
            self.dyno_hour_price,
            &mut t.dyno_hour_price,
        )?;
        amount(
            "free_hours_per_app",
            self.free_hours_per_app,
            &mut t.free_hours_per_app,
        )?;
        for (table, overrides, into) in [
            ("monthly", &self.monthly, &mut t.monthly),
            ("units", &self.units, &mut t.units),
        ] {
            for (name, v) in overrides {
                let size: Size = name.parse().map_err(|e: dyno_shared::size::UnknownSize| {
                    PricingError::Invalid(format!("[pricing.{table}]: {e}"))
                })?;
                let mut value = 0.0;
                amount(&format!("[pricing.{table}] {name}"), Some(*v), &mut value)?;
                into.insert(size.as_str().to_string(), value);
            }
        }
        Ok(t)
    }
}

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i64,
    pub month: u32,
}

impl Month {
    /// `2026-11`; anything else is refused with the reason.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("invalid month {s:?}: expected YYYY-MM, e.g. 2026-11");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let (year, month) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    pub fn containing(ms: i64) -> Month {
        let (year, month, _) = civil_from_days(ms.div_euclid(86_400_000));
        Month { year, month }
    }

    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * 86_400_000
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Wall-clock time one dyno existed at one size (starting, up or crashed).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageInterval {
    pub app_id: String,
    pub app: String,
    pub owner: String,
    pub process_type: String,
    /// `web.1`: the unit the monthly cap applies to.
    pub dyno: String,
    pub size: Size,
    pub started_at: i64,
    /// `None` while the dyno still exists.
    pub ended_at: Option<i64>,
}

/// A price table and the moment it took effect.
#[derive(Debug, Clone, PartialEq)]
pub struct PricingVersion {
    pub from_ms: i64,
    pub table: PriceTable,
}

/// One formation entry as it stands now, for the projection.
#[derive(Debug, Clone, PartialEq)]
pub struct FormationNow {
    pub app_id: String,
    pub app: String,
    pub owner: String,
    pub process_type: String,
    pub size: Size,
    pub quantity: u32,
}

/// Money in JSON: rounded to a hundredth of a cent, so sums read cleanly.
fn money(x: f64) -> f64 {
    // `+ 0.0` turns a -0.0 into 0.0.
    (x * 10_000.0).round() / 10_000.0 + 0.0
}

/// (app id, process type, size name): one line of the bill.
type LineKey = (String, String, &'static str);

#[derive(Default)]
struct LineAcc {
    ms: i64,
    cost: f64,
    future: f64,
    /// Eco only: hours used and to come, for sharing out the pool's price.
    eco_ms: f64,
    eco_future_ms: f64,
}

/// The table in effect at `t`; usage before the first recorded table is priced by it.
fn version_at(versions: &[PricingVersion], t: i64) -> usize {
    versions.iter().rposition(|v| v.from_ms <= t).unwrap_or(0)
}

/// The bill of `month` as of `now_ms`. `only_app` filters the apps shown (eco pools are still
/// shared out over all of an owner's apps). `versions` must be non-empty, oldest first.
pub fn bill(
    month: Month,
    now_ms: i64,
    intervals: &[UsageInterval],
    versions: &[PricingVersion],
    formation: &[FormationNow],
    only_app: Option<&str>,
) -> BillingReport {
    let fallback = [PricingVersion {
        from_ms: 0,
        table: PriceTable::monthly_preset(),
    }];
    let versions = if versions.is_empty() {
        &fallback[..]
    } else {
        versions
    };
    let (start, end) = (month.start_ms(), month.end_ms());
    let until = now_ms.clamp(start, end);
    let current = now_ms >= start && now_ms < end;
    let table_now = &versions[version_at(versions, until.saturating_sub(1).max(start))].table;

    // Cut every interval to the month (and now) and at each change of price table.
    struct Segment<'a> {
        iv: &'a UsageInterval,
        from: i64,
        to: i64,
        version: usize,
    }
    let mut segments: Vec<Segment> = Vec::new();
    for iv in intervals {
        let (mut from, to) = (
            iv.started_at.max(start),
            iv.ended_at.unwrap_or(until).min(until),
        );
        while from < to {
            let v = version_at(versions, from);
            let next_change = versions
                .get(v + 1)
                .map_or(i64::MAX, |n| n.from_ms.max(from + 1));
            // Also at midnight, for the cost per day.
            let midnight = (from.div_euclid(DAY_MS) + 1) * DAY_MS;
            let cut = to.min(next_change).min(midnight);
            segments.push(Segment {
                iv,
                from,
                to: cut,
                version: v,
            });
            from = cut;
        }
    }
    segments.sort_by_key(|s| (s.from, s.to));

    let mut lines: BTreeMap<LineKey, LineAcc> = BTreeMap::new();
    let mut app_meta: BTreeMap<String, (String, String)> = BTreeMap::new(); // app_id -> (name, owner)
    let line_key = |app_id: &str, ptype: &str, size: Size| {
        (app_id.to_string(), ptype.to_string(), size.as_str())
    };
    // Monthly model: what each dyno (app, name, size) has cost this month, for the cap.
    let mut per_dyno: HashMap<(String, String, Size), f64> = HashMap::new();
    // Dyno-hour model: dyno-hours each app used this month, for its free hours.
    let mut app_units: HashMap<String, f64> = HashMap::new();
    let mut eco_ms_by_owner: BTreeMap<String, f64> = BTreeMap::new();
    let days = ((end - start) / DAY_MS) as usize;
    let mut daily = vec![0.0; days];
    let mut eco_first_day: HashMap<String, usize> = HashMap::new();
    let shown = |app: &str| only_app.is_none_or(|a| a == app);

    for s in &segments {
        let iv = s.iv;
        let day = (((s.from - start) / DAY_MS) as usize).min(days - 1);
        app_meta
            .entry(iv.app_id.clone())
            .or_insert_with(|| (iv.app.clone(), iv.owner.clone()));
        let ms = s.to - s.from;
        let table = &versions[s.version].table;
        let acc = lines
            .entry(line_key(&iv.app_id, &iv.process_type, iv.size))
            .or_default();
        acc.ms += ms;
        if iv.size == Size::Eco {
            acc.eco_ms += ms as f64;
            *eco_ms_by_owner.entry(iv.owner.clone()).or_default() += ms as f64;
            let first = eco_first_day.entry(iv.owner.clone()).or_insert(day);
            *first = (*first).min(day);
            continue;
        }
        let before = acc.cost;
        let hours = ms as f64 / HOUR_MS;
        match table.model {
            Model::Monthly => {
                let spent = per_dyno
                    .entry((iv.app_id.clone(), iv.dyno.clone(), iv.size))
                    .or_default();
                let cap = table.monthly_of(iv.size).max(*spent);
                let after = (*spent + hours * table.hourly(iv.size)).min(cap);
                acc.cost += after - *spent;
                *spent = after;
            }
            Model::DynoHour => {
                let used = app_units.entry(iv.app_id.clone()).or_default();
                let units = hours * table.units_of(iv.size);
                let free_left = (table.free_hours_per_app - *used).max(0.0);
                acc.cost += (units - free_left).max(0.0) * table.dyno_hour_price;
                *used += units;
            }
        }
        if shown(&iv.app) {
            daily[day] += acc.cost - before;
        }
    }

    // The projection: today's formation, priced by today's table, until the month ends.
    let remaining_ms = if current { (end - now_ms) as f64 } else { 0.0 };
    let mut eco_formation_owners: Vec<String> = Vec::new();
    if current {
        let mut future_units: HashMap<String, Vec<(LineKey, f64)>> = HashMap::new();
        for f in formation.iter().filter(|f| f.quantity > 0) {
            app_meta
                .entry(f.app_id.clone())
                .or_insert_with(|| (f.app.clone(), f.owner.clone()));
            let key = line_key(&f.app_id, &f.process_type, f.size);
            let hours = remaining_ms / HOUR_MS;
            if f.size == Size::Eco {
                lines.entry(key).or_default().eco_future_ms += remaining_ms * f.quantity as f64;
                eco_formation_owners.push(f.owner.clone());
                continue;
            }
            match table_now.model {
                Model::Monthly => {
                    let mut future = 0.0;
                    for idx in 1..=f.quantity {
                        let spent = per_dyno
                            .get(&(
                                f.app_id.clone(),
                                format!("{}.{idx}", f.process_type),
                                f.size,
                            ))
                            .copied()
                            .unwrap_or(0.0);
                        let room = (table_now.monthly_of(f.size) - spent).max(0.0);
                        future += (hours * table_now.hourly(f.size)).min(room);
                    }
                    lines.entry(key).or_default().future += future;
                }
                Model::DynoHour => {
                    let units = hours * table_now.units_of(f.size) * f.quantity as f64;
                    future_units
                        .entry(f.app_id.clone())
                        .or_default()
                        .push((key, units));
                }
            }
        }
        for (app_id, parts) in future_units {
            let used = app_units.get(&app_id).copied().unwrap_or(0.0);
            let total: f64 = parts.iter().map(|(_, u)| u).sum();
            let free = table_now.free_hours_per_app;
            let extra = ((used + total - free).max(0.0) - (used - free).max(0.0))
                * table_now.dyno_hour_price;
            for (key, units) in parts {
                if total > 0.0 {
                    lines.entry(key).or_default().future += extra * units / total;
                }
            }
        }
    }

    // Eco pools: one flat price per owner and month, shared out by the hours each line used.
    let owners: Vec<String> = eco_ms_by_owner
        .keys()
        .cloned()
        .chain(eco_formation_owners.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut eco_pools = Vec::new();
    for owner in &owners {
        let used_ms = eco_ms_by_owner.get(owner).copied().unwrap_or(0.0);
        let cost = if used_ms > 0.0 {
            table_now.eco_pool_price
        } else {
            0.0
        };
        let projected = table_now.eco_pool_price;
        let owned = |app_id: &str| app_meta.get(app_id).is_some_and(|(_, o)| o == owner);
        let total_future: f64 = lines
            .iter()
            .filter(|((a, _, _), _)| owned(a))
            .map(|(_, l)| l.eco_ms + l.eco_future_ms)
            .sum();
        for ((app_id, _, _), l) in lines.iter_mut() {
            if !owned(app_id) {
                continue;
            }
            if used_ms > 0.0 {
                let share = cost * l.eco_ms / used_ms;
                l.cost += share;
                let name = app_meta.get(app_id).map_or("", |(n, _)| n.as_str());
                if let (true, Some(&d)) = (shown(name), eco_first_day.get(owner)) {
                    daily[d] += share;
                }
            }
            if total_future > 0.0 {
                l.future += projected * (l.eco_ms + l.eco_future_ms) / total_future
                    - cost * l.eco_ms / used_ms.max(1.0);
            }
        }
        let hours_used = used_ms / HOUR_MS;
        if only_app.is_none_or(|a| app_meta.values().any(|(n, o)| n == a && o == owner)) {
            eco_pools.push(EcoPool {
                owner: owner.clone(),
                hours_used: (hours_used * 10_000.0).round() / 10_000.0,
                hours_limit: table_now.eco_pool_hours,
                cost: money(cost),
                exhausted: hours_used >= table_now.eco_pool_hours,
            });
        }
    }

    let quantity = |app_id: &str, ptype: &str, size: &str| {
        formation
            .iter()
            .filter(|f| f.app_id == app_id && f.process_type == ptype && f.size.as_str() == size)
            .map(|f| f.quantity)
            .sum()
    };
    let mut apps: BTreeMap<(String, String), AppBilling> = BTreeMap::new();
    for ((app_id, ptype, size), l) in &lines {
        let (name, owner) = app_meta[app_id].clone();
        if only_app.is_some_and(|a| a != name) {
            continue;
        }
        let cost = money(l.cost);
        let projected = if current {
            money(l.cost + l.future.max(0.0))
        } else {
            cost
        };
        let app = apps
            .entry((name.clone(), app_id.clone()))
            .or_insert_with(|| AppBilling {
                app: name,
                owner,
                lines: Vec::new(),
                cost: 0.0,
                projected: 0.0,
            });
        app.cost += cost;
        app.projected += projected;
        app.lines.push(BillingLine {
            process_type: ptype.clone(),
            size: size.parse().unwrap_or_default(),
            dyno_seconds: (l.ms / 1000) as u64,
            dyno_hours: ((l.ms as f64 / HOUR_MS) * 10_000.0).round() / 10_000.0,
            cost,
            projected,
            quantity: quantity(app_id, ptype, size),
        });
    }
    let apps: Vec<AppBilling> = apps
        .into_values()
        .map(|mut a| {
            a.cost = money(a.cost);
            a.projected = money(a.projected);
            a
        })
        .collect();
    BillingReport {
        month: month.to_string(),
        currency: table_now.currency.clone(),
        model: table_now.model.as_str().to_string(),
        generated_at: rfc3339_micros(now_ms * 1000),
        current,
        cost: money(apps.iter().map(|a| a.cost).sum()),
        projected: money(apps.iter().map(|a| a.projected).sum()),
        daily: daily
            .iter()
            .enumerate()
            .take(if current {
                ((now_ms - start) / DAY_MS) as usize + 1
            } else if now_ms < start {
                0
            } else {
                days
            })
            .map(|(i, c)| {
                let (y, m, d) = civil_from_days((start / DAY_MS) + i as i64);
                DayCost {
                    date: format!("{y:04}-{m:02}-{d:02}"),
                    cost: money(*c),
                }
            })
            .collect(),
        apps,
        eco_pools,
    }
}

/// Eco milliseconds each owner used in `month` up to `now_ms`, from the intervals alone.
pub fn eco_ms_by_owner(
    month: Month,
    now_ms: i64,
    intervals: &[UsageInterval],
) -> HashMap<String, i64> {
    let (start, until) = (month.start_ms(), now_ms.min(month.end_ms()));
    let mut out: HashMap<String, i64> = HashMap::new();
    for iv in intervals.iter().filter(|i| i.size == Size::Eco) {
        let ms = iv.ended_at.unwrap_or(until).min(until) - iv.started_at.max(start);
        if ms > 0 {
            *out.entry(iv.owner.clone()).or_default() += ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn nov() -> Month {
        Month::parse("2026-11").unwrap()
    }

    fn iv(dyno: &str, size: Size, from: i64, to: Option<i64>) -> UsageInterval {
        let (ptype, _) = dyno.split_once('.').unwrap();
        UsageInterval {
            app_id: "a-1".into(),
            app: "shop".into(),
            owner: "acme".into(),
            process_type: ptype.into(),
            dyno: dyno.into(),
            size,
            started_at: from,
            ended_at: to,
        }
    }

    fn monthly() -> Vec<PricingVersion> {
        vec![PricingVersion {
            from_ms: 0,
            table: PriceTable::monthly_preset(),
        }]
    }

    fn line<'a>(r: &'a BillingReport, ptype: &str, size: Size) -> &'a BillingLine {
        r.apps[0]
            .lines
            .iter()
            .find(|l| l.process_type == ptype && l.size == size)
            .unwrap()
    }

    #[test]
    fn months_parse_strictly_and_know_their_bounds() {
        let m = nov();
        assert_eq!(m.to_string(), "2026-11");
        assert_eq!(m.end_ms() - m.start_ms(), 30 * 24 * H);
        assert_eq!(
            Month::parse("2026-12").unwrap().next().to_string(),
            "2027-01"
        );
        assert_eq!(Month::containing(m.start_ms()), m);
        assert_eq!(Month::containing(m.end_ms() - 1), m);
        // All UTC: months that hold a daylight-saving change elsewhere are whole days long.
        let march = Month::parse("2026-03").unwrap();
        assert_eq!(march.end_ms() - march.start_ms(), 31 * 24 * H);
        let oct = Month::parse("2026-10").unwrap();
        assert_eq!(oct.end_ms() - oct.start_ms(), 31 * 24 * H);
        // February of a leap year.
        let feb = Month::parse("2028-02").unwrap();
        assert_eq!(feb.end_ms() - feb.start_ms(), 29 * 24 * H);
        for bad in [
            "2026-13",
            "2026-00",
            "26-11",
            "2026/11",
            "2026-1",
            "2026-11-01",
            "",
        ] {
            let e = Month::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_standard_dyno_costs_a_720th_of_its_monthly_price_per_hour_prorated_per_second() {
        let start = nov().start_ms() + 10 * H;
        let end = start + 2 * H + 30 * 60_000 + 15_000; // 2 h 30 min 15 s
        let r = bill(
            nov(),
            end + H,
            &[iv("web.1", Size::Standard1x, start, Some(end))],
            &monthly(),
            &[],
            None,
        );
        let l = line(&r, "web", Size::Standard1x);
        assert_eq!(l.dyno_seconds, 9015);
        let expected = 25.0 / 720.0 * 9015.0 / 3600.0;
        assert!((l.cost - expected).abs() < 1e-4, "{} vs {expected}", l.cost);
        assert_eq!(r.cost, l.cost);
        assert!(r.current);
        assert_eq!(r.currency, "USD");
    }

    #[test]
    fn a_dyno_never_costs_more_than_its_monthly_price_in_a_month() {
        let m = nov();
        // The whole month (720 h = the cap exactly) and a restart that made a second interval.
        let ivs = [
            iv(
                "web.1",
                Size::Standard2x,
                m.start_ms() - 5 * H,
                Some(m.start_ms() + 100 * H),
            ),
            iv("web.1", Size::Standard2x, m.start_ms() + 100 * H, None),
        ];
        let r = bill(m, m.end_ms() + 10 * H, &ivs, &monthly(), &[], None);
        let l = line(&r, "web", Size::Standard2x);
        assert_eq!(l.dyno_seconds, 720 * 3600, "usage is clipped to the month");
        assert!((l.cost - 50.0).abs() < 1e-9, "{}", l.cost);
        assert!(!r.current);
        assert_eq!(l.projected, l.cost, "a past month projects nothing");

        // 31-day months: 744 h, still at most the monthly price.
        let dec = Month::parse("2026-12").unwrap();
        let r = bill(
            dec,
            dec.end_ms(),
            &[iv("web.1", Size::Standard1x, dec.start_ms(), None)],
            &monthly(),
            &[],
            None,
        );
        assert_eq!(r.cost, 25.0);
        // Two dynos are capped separately.
        let ivs = [
            iv("web.1", Size::Standard1x, dec.start_ms(), None),
            iv("web.2", Size::Standard1x, dec.start_ms(), None),
        ];
        assert_eq!(
            bill(dec, dec.end_ms(), &ivs, &monthly(), &[], None).cost,
            50.0
        );
    }

    #[test]
    fn a_mid_month_size_change_bills_each_size_for_its_time() {
        let m = nov();
        let t = m.start_ms() + 15 * 24 * H;
        let ivs = [
            iv("web.1", Size::Standard1x, m.start_ms(), Some(t)),
            iv("web.1", Size::Standard2x, t, None),
        ];
        let r = bill(m, m.end_ms() - 1, &ivs, &monthly(), &[], None);
        let one = line(&r, "web", Size::Standard1x);
        let two = line(&r, "web", Size::Standard2x);
        // Per day: 24 h of a 1x, then of a 2x from day 16; the days add up to the month.
        assert_eq!(r.daily.len(), 30);
        assert_eq!(r.daily[0].date, "2026-11-01");
        assert!(
            (r.daily[0].cost - 25.0 / 30.0).abs() < 1e-3,
            "{:?}",
            r.daily[0]
        );
        assert!(
            (r.daily[20].cost - 50.0 / 30.0).abs() < 1e-3,
            "{:?}",
            r.daily[20]
        );
        let sum: f64 = r.daily.iter().map(|d| d.cost).sum();
        assert!((sum - r.cost).abs() < 0.01, "{sum} vs {}", r.cost);
        assert!(
            (one.cost - 25.0 * 360.0 / 720.0).abs() < 1e-3,
            "{}",
            one.cost
        );
        assert!(
            (two.cost - 50.0 * 360.0 / 720.0).abs() < 1e-3,
            "{}",
            two.cost
        );
    }

    #[test]
    fn the_projection_adds_the_current_formation_until_month_end_within_the_cap() {
        let m = nov();
        let now = m.start_ms() + 10 * 24 * H; // 240 h in, 480 h to go
        let ivs = [iv("web.1", Size::Standard1x, m.start_ms(), None)];
        let formation = [FormationNow {
            app_id: "a-1".into(),
            app: "shop".into(),
            owner: "acme".into(),
            process_type: "web".into(),
            size: Size::Standard1x,
            quantity: 2,
        }];
        let r = bill(m, now, &ivs, &monthly(), &formation, None);
        let l = line(&r, "web", Size::Standard1x);
        let per_hour = 25.0 / 720.0;
        assert!((l.cost - 240.0 * per_hour).abs() < 1e-3);
        // web.1 reaches its cap (25), web.2 runs 480 h.
        let expected = 25.0 + 480.0 * per_hour;
        assert!(
            (l.projected - expected).abs() < 1e-3,
            "{} vs {expected}",
            l.projected
        );
        assert_eq!(l.quantity, 2);
        assert_eq!(r.projected, l.projected);
    }

    #[test]
    fn a_price_change_applies_from_the_moment_it_was_made() {
        let m = nov();
        let change = m.start_ms() + 10 * H;
        let mut cheaper = PriceTable::monthly_preset();
        cheaper.monthly.insert("standard-1x".into(), 7.2); // 0.01 an hour
        let versions = [
            PricingVersion {
                from_ms: 0,
                table: PriceTable::monthly_preset(),
            },
            PricingVersion {
                from_ms: change,
                table: cheaper,
            },
        ];
        let ivs = [iv(
            "web.1",
            Size::Standard1x,
            m.start_ms(),
            Some(m.start_ms() + 20 * H),
        )];
        let r = bill(m, m.start_ms() + 30 * H, &ivs, &versions, &[], None);
        let expected = 10.0 * 25.0 / 720.0 + 10.0 * 0.01;
        assert!((r.cost - expected).abs() < 1e-4, "{} vs {expected}", r.cost);
    }

    #[test]
    fn the_2011_model_gives_each_app_free_dyno_hours_then_charges_per_dyno_hour() {
        let m = nov();
        let versions = [PricingVersion {
            from_ms: 0,
            table: PriceTable::dyno_hour_preset(),
        }];
        // Two 1x dynos for 500 h each: 1000 dyno-hours, 750 free, 250 at $0.05.
        let ivs = [
            iv(
                "web.1",
                Size::Standard1x,
                m.start_ms(),
                Some(m.start_ms() + 500 * H),
            ),
            iv(
                "web.2",
                Size::Standard1x,
                m.start_ms(),
                Some(m.start_ms() + 500 * H),
            ),
        ];
        let r = bill(m, m.end_ms(), &ivs, &versions, &[], None);
        assert_eq!(r.model, "dyno-hour");
        assert!((r.cost - 12.5).abs() < 1e-6, "{}", r.cost);
        // A 2x dyno counts double, and nothing caps the 2011 model.
        let ivs = [iv("web.1", Size::Standard2x, m.start_ms(), None)];
        let r = bill(m, m.end_ms(), &ivs, &versions, &[], None);
        assert!(
            (r.cost - (1440.0 - 750.0) * 0.05).abs() < 1e-6,
            "{}",
            r.cost
        );
    }

    #[test]
    fn eco_dynos_share_one_pool_per_owner_and_cost_its_flat_price() {
        let m = nov();
        let mut a = iv(
            "web.1",
            Size::Eco,
            m.start_ms(),
            Some(m.start_ms() + 300 * H),
        );
        let mut b = iv(
            "worker.1",
            Size::Eco,
            m.start_ms(),
            Some(m.start_ms() + 100 * H),
        );
        b.app_id = "a-2".into();
        b.app = "blog".into();
        let mut other = iv("web.1", Size::Eco, m.start_ms(), Some(m.start_ms() + H));
        other.app_id = "a-3".into();
        other.app = "elsewhere".into();
        other.owner = "globex".into();
        a.owner = "acme".into();
        let r = bill(m, m.end_ms(), &[a, b, other], &monthly(), &[], None);
        let acme = r.eco_pools.iter().find(|p| p.owner == "acme").unwrap();
        assert_eq!(acme.hours_used, 400.0);
        assert_eq!(acme.hours_limit, 1000.0);
        assert_eq!(acme.cost, 5.0);
        assert!(!acme.exhausted);
        let shop = r.apps.iter().find(|x| x.app == "shop").unwrap();
        let blog = r.apps.iter().find(|x| x.app == "blog").unwrap();
        assert!((shop.cost - 3.75).abs() < 1e-9 && (blog.cost - 1.25).abs() < 1e-9);
        assert!(
            (r.cost - 10.0).abs() < 1e-9,
            "two owners, two pools: {}",
            r.cost
        );

        // The pool runs out at its limit.
        let mut small = PriceTable::monthly_preset();
        small.eco_pool_hours = 500.0;
        let versions = [PricingVersion {
            from_ms: 0,
            table: small,
        }];
        let ivs = [iv("web.1", Size::Eco, m.start_ms(), None)];
        let r = bill(m, m.start_ms() + 499 * H, &ivs, &versions, &[], None);
        assert!(!r.eco_pools[0].exhausted);
        let r = bill(m, m.start_ms() + 500 * H, &ivs, &versions, &[], None);
        assert!(r.eco_pools[0].exhausted);
        let used = eco_ms_by_owner(m, m.start_ms() + 500 * H, &ivs);
        assert_eq!(used["acme"], 500 * H);
    }

    #[test]
    fn one_app_can_be_billed_alone() {
        let m = nov();
        let mut other = iv(
            "web.1",
            Size::Standard1x,
            m.start_ms(),
            Some(m.start_ms() + H),
        );
        other.app_id = "a-2".into();
        other.app = "blog".into();
        let ivs = [
            iv("web.1", Size::Basic, m.start_ms(), Some(m.start_ms() + H)),
            other,
        ];
        let r = bill(m, m.end_ms(), &ivs, &monthly(), &[], Some("blog"));
        assert_eq!(r.apps.len(), 1);
        assert_eq!(r.apps[0].app, "blog");
        assert!((r.cost - 25.0 / 720.0).abs() < 1e-4);
    }

    #[test]
    fn usage_outside_the_month_and_before_now_costs_nothing() {
        let m = nov();
        let before = iv(
            "web.1",
            Size::Standard1x,
            m.start_ms() - 5 * H,
            Some(m.start_ms()),
        );
        let r = bill(m, m.end_ms(), &[before], &monthly(), &[], None);
        assert!(r.apps.is_empty());
        assert_eq!(r.cost, 0.0);
        // A future month has nothing yet and projects nothing.
        let dec = m.next();
        let running = iv("web.1", Size::Standard1x, m.start_ms(), None);
        let r = bill(dec, m.start_ms() + H, &[running], &monthly(), &[], None);
        assert!(r.apps.is_empty() && !r.current);
    }

    #[test]
    fn config_overrides_a_preset_and_refuses_bad_values_by_name() {
        let cfg: CoordinatorConfig = toml::from_str(
            "[pricing]\npreset = \"dyno-hour\"\ncurrency = \"eur\"\nfree_hours_per_app = 0\n[pricing.units]\nstandard-2x = 3\n[pricing.monthly]\n2x = 40\n",
        )
        .unwrap();
        let t = cfg.pricing.resolve().unwrap();
        assert_eq!(t.model, Model::DynoHour);
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.free_hours_per_app, 0.0);
        assert_eq!(t.units["standard-2x"], 3.0);
        assert_eq!(t.monthly["standard-2x"], 40.0);
        assert!((t.hourly(Size::Standard2x) - 0.15).abs() < 1e-12);

        let unknown = toml::from_str::<CoordinatorConfig>("[pricing]\nprice = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("price"), "{unknown}");
        let bad_size = toml::from_str::<CoordinatorConfig>("[pricing.monthly]\nhuge = 3\n")
            .unwrap()
            .pricing
            .resolve()
            .unwrap_err();
        assert!(bad_size.to_string().contains("huge"), "{bad_size}");
        let negative = toml::from_str::<CoordinatorConfig>("[pricing]\neco_pool_price = -1\n")
            .unwrap()
            .pricing
            .resolve()
            .unwrap_err();
        assert!(
            negative.to_string().contains("eco_pool_price"),
            "{negative}"
        );
        let default = CoordinatorConfig::default().pricing.resolve().unwrap();
        assert_eq!(default, PriceTable::monthly_preset());
        assert_eq!(default.to_api(0).sizes[2].max_monthly, Some(25.0));
    }
}
