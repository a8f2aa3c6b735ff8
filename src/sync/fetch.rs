//! One user's part of a run: the requests the planner allows, harmonized into units with
//! their coverage, sent to the committer as pieces. A piece carries the state marks that
//! become true once its units are committed (a cursor, a backfilled window), never before.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use serde_json::Value;

pub(crate) use super::marks::Mark;
use super::plan::{self, Decision, chunks, local_day, utc_window};
use super::{Env, Mode};
use crate::credentials::CredentialsError;
use crate::error::Classify;
use crate::harmonize::{self, Context, Evidence, Harmonized, SleepSession};
use crate::lake::{Coverage, Endpoint, TableId, Unit};
use crate::landing as raw;
use crate::secret::Secret;
use crate::state::{DateRange, KnownHeight, UserState};
use crate::withings::types::{Activity, Item, SleepSummary};
use crate::withings::{ErrorClass, MeasQuery, MeasureList, Window, WithingsClient};

/// Units of one user to stage, and what to record once they are committed.
#[derive(Debug, Default)]
pub(crate) struct Piece {
    pub user_id: String,
    pub units: Vec<Unit>,
    pub marks: Vec<Mark>,
    pub quarantined: u64,
    /// Part of a backfill or of a family's first sync: its changes are announced by
    /// `historical.data.*` events, not one `daily.data.*` per row.
    pub historical: bool,
}

/// Why a user's part stopped.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// `family`: the endpoint being fetched when it failed.
    Failed {
        class: ErrorClass,
        error: String,
        family: Option<Endpoint>,
    },
    Interrupted,
    /// The committer is gone (a fatal error ended the run).
    Closed,
}

impl From<CredentialsError> for Stop {
    fn from(e: CredentialsError) -> Stop {
        Stop::Failed { class: e.class(), error: e.to_string(), family: None }
    }
}

pub(crate) struct UserJob {
    env: Arc<Env>,
    pub user_id: String,
    pub state: UserState,
    pub tx: tokio::sync::mpsc::Sender<super::Msg>,
    pub ctx: Context,
    /// Heights known so far (the state's and any seen this run), for BMI.
    pub heights: Vec<(i64, f64)>,
    /// The endpoint of the request in flight (a failure is recorded against it).
    pub current: std::sync::Mutex<Option<Endpoint>>,
    /// The run is a backfill: every piece is historical.
    pub historical: bool,
    /// Local days whose getmeas rows, and whose intraday rows, must be stamped again (the
    /// state's pending days and those this run's zone evidence changed).
    pub restamp_getmeas: BTreeSet<NaiveDate>,
    pub restamp_intraday: BTreeSet<NaiveDate>,
    /// Intraday days this run fetched with the timeline as it stands.
    pub intraday_fetched: BTreeSet<NaiveDate>,
    /// getmeas answers listed but not yet harmonized (they wait for the day-level records
    /// that tell the zone of each day), with their piece and its marks.
    pub held: Option<(Vec<(MeasureList, Coverage)>, Piece)>,
}

impl UserJob {
    /// The job of one user of a run, from the user's committed state.
    pub fn new(
        env: Arc<Env>,
        mode: &Mode,
        run_id: &str,
        ingested_at: chrono::DateTime<chrono::Utc>,
        user: super::select::Linked,
        state: UserState,
        tx: tokio::sync::mpsc::Sender<super::Msg>,
    ) -> UserJob {
        let ctx = Context {
            user_id: user.user_id.clone(),
            withings_user_id: user.withings_user_id,
            run_id: run_id.to_string(),
            ingested_at,
            time_zone: state.time_zone.clone(),
            zones: Arc::new(state.zones.clone()),
        };
        let heights = state.height.and_then(|h| harmonize::scaled(h.value, h.unit).map(|v| (h.at, v))).into_iter().collect();
        UserJob {
            env,
            user_id: user.user_id,
            restamp_getmeas: state.restamp_getmeas.0.clone(),
            restamp_intraday: state.restamp_intraday.0.clone(),
            intraday_fetched: Default::default(),
            held: None,
            state,
            tx,
            ctx,
            heights,
            current: Default::default(),
            historical: matches!(mode, Mode::Backfill { .. }),
        }
    }
}

fn modified_of(raw: &Value) -> Option<i64> {
    match raw.get("modified")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An activity row's identity: its local date and its source (device, else model and brand).
fn activity_key(raw: &Value) -> String {
    let field = |f: &str| raw.get(f).map(|v| v.to_string()).unwrap_or_default();
    format!("{}/{}/{}/{}", field("date"), field("hash_deviceid"), field("deviceid"), field("model"))
}

/// The key a sleep summary's handled version is kept under.
fn summary_key(raw: &Value) -> String {
    raw.get("id").map(Value::to_string).unwrap_or_default()
}

/// Records the versions handled in this listing, so that the next run, which sees them again
/// inside the overlap, does not count them as changed.
fn remember(p: &mut Piece, e: Endpoint, versions: &[(String, Option<i64>)]) {
    let handled: Vec<(String, i64)> = versions.iter().filter_map(|(k, v)| Some((k.clone(), (*v)?))).collect();
    if let Some(Mark::Cursor(_, _, recent)) = p.marks.iter_mut().find(|m| matches!(m, Mark::Cursor(f, ..) if *f == e)) {
        *recent = handled;
    }
}

fn max_modified<'a>(raws: impl Iterator<Item = &'a Value>) -> Option<i64> {
    // An implausible `modified` (quarantined with its record) never becomes a cursor: one in
    // 2100 would make every later `lastupdate` ask for nothing.
    use crate::withings::types::{AHEAD_SECONDS, EARLIEST};
    let plausible = EARLIEST..=chrono::Utc::now().timestamp() + AHEAD_SECONDS;
    raws.filter_map(|r| match r.get("modified")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
    .filter(|m| plausible.contains(m))
    .max()
}

/// The latest height measure (meastype 4) of a getmeas answer.
fn latest_height(list: &MeasureList) -> Option<KnownHeight> {
    list.groups
        .iter()
        .filter_map(|g| g.value.as_ref().ok())
        .flat_map(|g| {
            g.measures.iter().filter(|m| m.kind == 4).map(move |m| KnownHeight { at: g.date, value: m.value, unit: m.unit })
        })
        .max_by_key(|h| h.at)
}

impl UserJob {
    fn family_cursor(&self, e: Endpoint) -> Option<i64> {
        self.state.families.get(e.as_str()).and_then(|f| f.cursor)
    }

    fn covered(&self, e: Endpoint, r: DateRange) -> bool {
        self.state.families.get(e.as_str()).is_some_and(|f| f.covers(r))
    }

    fn wants(&self, e: Endpoint) -> bool {
        self.env.families.contains(&e)
    }

    fn check_cancel(&self) -> Result<(), Stop> {
        if *self.env.cancel.borrow() { Err(Stop::Interrupted) } else { Ok(()) }
    }

    async fn send(&self, piece: Piece) -> Result<(), Stop> {
        self.env.progress.pieces.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx.send(super::Msg::Piece(piece)).await.map_err(|_| Stop::Closed)
    }

    fn piece(&self) -> Piece {
        Piece { user_id: self.user_id.clone(), historical: self.historical, ..Piece::default() }
    }

    /// The resources whose `historical.data` event is due at the end of a successful part:
    /// those `families` (fetched for the first time, or for a new window) feed, and those
    /// never announced that are `complete` (a part that failed half-way announced nothing).
    fn historical_due(
        &self,
        families: &BTreeSet<Endpoint>,
        complete: impl Fn(crate::schema::Resource) -> bool,
    ) -> Vec<crate::schema::Resource> {
        let fed = |r: crate::schema::Resource| plan::families_for(&[r]).iter().any(|f| families.contains(f));
        let owed = |r: crate::schema::Resource| {
            self.state.historical_announced.as_ref().is_some_and(|a| !a.contains(r.as_str())) && complete(r)
        };
        self.env.cfg.resources.iter().copied().filter(|r| fed(*r) || owed(*r)).collect()
    }

    /// Announces the resources of this backfill whose families are all `done` and that were
    /// not announced yet (a `historical.data.<resource>.created` each, as each completes),
    /// over `[start, end]` with `end` never past now.
    async fn announce_done(
        &self,
        candidates: &[crate::schema::Resource],
        done: &BTreeSet<Endpoint>,
        announced: &mut BTreeSet<crate::schema::Resource>,
        (start, end): (i64, i64),
    ) -> Result<(), Stop> {
        let due: Vec<crate::schema::Resource> = candidates
            .iter()
            .copied()
            .filter(|r| !announced.contains(r))
            .filter(|r| plan::families_for(&[*r]).iter().filter(|f| self.wants(**f)).all(|f| done.contains(f)))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        announced.extend(due.iter().copied());
        let mut p = self.piece();
        p.marks.push(Mark::Historical { resources: due, start, end: end.min(self.env.now) });
        self.send(p).await
    }

    /// Adds the harmonized tables (the run's resources only) and the quarantine to `p`.
    fn add(&self, p: &mut Piece, h: Harmonized, coverage: Coverage) {
        if !h.quarantine.is_empty() {
            p.quarantined += h.quarantine.len() as u64;
            p.units.push(Unit { table: TableId::Quarantine, batch: h.quarantine_batch(&self.ctx), coverage: Coverage::Upsert });
        }
        let window = matches!(coverage, Coverage::Window { .. });
        for (r, batch) in h.tables {
            if self.env.cfg.resources.contains(&r) && (window || batch.num_rows() > 0) {
                p.units.push(Unit { table: r.into(), batch, coverage: coverage.clone() });
            }
        }
    }

    fn land(&self, p: &mut Piece, e: Endpoint, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            p.units.push(Unit { table: TableId::Raw(e), batch, coverage: Coverage::Upsert });
        }
    }

    fn window(&self, e: Endpoint, start: i64, end: i64) -> Coverage {
        Coverage::Window { user_id: self.user_id.clone(), endpoint: e.as_str().to_string(), start, end }
    }

    fn plan(&self, e: Endpoint, n: u64) {
        *self.current.lock().expect("current lock") = Some(e);
        self.env.planned(e, n);
    }

    /// Takes in zone evidence: the working timeline learns it (later harmonizing uses it) and
    /// `p` carries it to the state, with the days whose zone or span it changed. Rows stamped
    /// before exist only when the state already had a timeline (a lake written before zone
    /// timelines is fixed by `reharmonize`).
    fn learn_zones(&mut self, p: &mut Piece, days: Vec<harmonize::DayZone>) {
        if days.is_empty() {
            return;
        }
        let before = self.ctx.zones.clone();
        let timeline = Arc::make_mut(&mut self.ctx.zones);
        let mut moved = false;
        for (d, z, e) in &days {
            moved |= timeline.observe(*d, z, *e);
        }
        let changed = if moved && !self.state.zones.is_empty() {
            before.changed_days(&self.ctx.zones, self.today().succ_opt().unwrap_or(self.today()))
        } else {
            Vec::new()
        };
        for d in &changed {
            // A day fetched before this evidence was stamped with the old zone: fetched again.
            self.intraday_fetched.remove(d);
        }
        self.restamp_getmeas.extend(changed.iter().copied());
        self.restamp_intraday.extend(changed.iter().copied());
        p.marks.push(Mark::Zones { days, changed });
    }

    fn today(&self) -> NaiveDate {
        chrono::DateTime::from_timestamp(self.env.now, 0).unwrap_or_default().date_naive()
    }

    /// The current zone of a getmeas answer, as evidence of the day it was seen: only for a
    /// user whose day-level records stopped (none in the last two days). While records come,
    /// they say where the person is; an account zone that differs from the device's (or names
    /// it by an alias) would otherwise flip today's zone back and forth every run.
    fn learn_current_zone(&mut self, p: &mut Piece, list: &MeasureList) {
        let Some(tz) = list.timezone.as_deref().filter(|z| !z.trim().is_empty()) else { return };
        let Some(today) = harmonize::Zone::new(Some(tz)).local_date(self.env.now) else { return };
        let recent = today.checked_sub_days(chrono::Days::new(2)).unwrap_or(today);
        if self.ctx.zones.has_record_between(recent, today) {
            return;
        }
        self.learn_zones(p, vec![(today, tz.to_string(), Evidence::Current)]);
    }

    /// Intraday for one local day, remembered as fetched with the timeline as it stands.
    async fn fetch_intraday_day(&mut self, day: NaiveDate, zone: Option<&str>) -> Result<Piece, Stop> {
        let p = self.intraday_day(day, zone).await?;
        self.intraday_fetched.insert(day);
        Ok(p)
    }

    /// The pending wearable days not fetched by this run otherwise, fetched again (their
    /// rows take their day's zone and span), then a piece clearing every pending day whose
    /// intraday is stamped: fetched by this run, or not a wearable day. Nothing is cleared
    /// while this run may not fetch intraday (a refresh of other families).
    async fn restamp_intraday(&mut self, allowed: bool) -> Result<(), Stop> {
        if self.restamp_intraday.is_empty() || (self.wants(Endpoint::Getintradayactivity) && !allowed) {
            return Ok(());
        }
        if self.wants(Endpoint::Getintradayactivity) {
            let days: Vec<NaiveDate> = self
                .ctx
                .zones
                .wearable_days()
                .filter(|d| self.restamp_intraday.contains(d) && !self.intraday_fetched.contains(d))
                .collect();
            for day in days.into_iter().rev() {
                let p = self.fetch_intraday_day(day, None).await?;
                self.send(p).await?;
            }
        }
        let wearable: BTreeSet<NaiveDate> = self.ctx.zones.wearable_days().collect();
        let done: BTreeSet<NaiveDate> = self
            .restamp_intraday
            .iter()
            .copied()
            .filter(|d| !self.wants(Endpoint::Getintradayactivity) || !wearable.contains(d) || self.intraday_fetched.contains(d))
            .collect();
        if !done.is_empty() {
            self.restamp_intraday.retain(|d| !done.contains(d));
            let mut p = self.piece();
            p.marks.push(Mark::Restamped { getmeas: BTreeSet::new(), intraday: done });
            self.send(p).await?;
        }
        Ok(())
    }

    /// Re-lists getmeas over the runs of pending days outside `covered` (the getmeas windows
    /// this run listed): a window replace each, harmonized with the timeline as it stands; then
    /// every pending day is done. Nothing happens while this run may not list getmeas.
    async fn restamp_getmeas(&mut self, covered: &[(i64, i64)], allowed: bool) -> Result<(), Stop> {
        if self.restamp_getmeas.is_empty() || (self.wants(Endpoint::Getmeas) && !allowed) {
            return Ok(());
        }
        let mut p = self.piece();
        if self.wants(Endpoint::Getmeas) {
            let days = harmonize::DaySet(self.restamp_getmeas.clone());
            for (first, last) in days.runs() {
                // Every instant of those local days, in any zone (UTC-12 to UTC+14).
                let (a, _) = utc_window(DateRange { from: first, to: first });
                let (_, b) = utc_window(DateRange { from: last, to: last });
                let (a, b) = (a - 14 * 3600, b + 12 * 3600);
                if covered.iter().any(|(x, y)| *x <= a && b <= *y) {
                    continue;
                }
                let list = self.getmeas(MeasQuery { startdate: Some(a), enddate: Some(b - 1), ..MeasQuery::default() }).await?;
                self.heights_for(&list, &mut p).await?;
                self.harmonize_getmeas(&mut p, &list, self.window(Endpoint::Getmeas, a, b));
            }
        }
        p.marks.push(Mark::Restamped { getmeas: std::mem::take(&mut self.restamp_getmeas), intraday: BTreeSet::new() });
        self.send(p).await
    }

    /// Harmonizes the held getmeas answers with the timeline as it stands and sends them.
    async fn flush_getmeas(&mut self) -> Result<(), Stop> {
        let Some((lists, mut p)) = self.held.take() else { return Ok(()) };
        for (list, coverage) in lists {
            self.harmonize_getmeas(&mut p, &list, coverage);
        }
        self.send(p).await
    }

    /// Runs one user's part of the run.
    pub async fn run(mut self, mode: &Mode) -> Result<(), Stop> {
        // A state from before events: what is already complete counts as announced, and the
        // user is seen connected (so a later loss of authorization is announced).
        let mut baseline = self.piece();
        if self.state.historical_announced.is_none() {
            let complete: std::collections::BTreeSet<String> = self
                .env
                .cfg
                .resources
                .iter()
                .filter(|r| {
                    plan::families_for(&[**r])
                        .iter()
                        .filter(|f| self.wants(**f))
                        .all(|f| self.state.families.get(f.as_str()).is_some_and(|s| s.last_success.is_some()))
                })
                .map(|r| r.as_str().to_string())
                .collect();
            self.state.historical_announced = Some(complete.clone());
            baseline.marks.push(Mark::AnnouncedBaseline(complete));
        }
        if self.state.reauth_announced.is_none() {
            self.state.reauth_announced = Some(0);
            baseline.marks.push(Mark::SeenConnected);
        }
        if !baseline.marks.is_empty() {
            self.send(baseline).await?;
        }
        let result = match mode {
            Mode::Backfill { from, to } => self.backfill(DateRange { from: *from, to: *to }).await,
            Mode::Incremental => self.incremental(None, None).await,
            Mode::Refresh { families, windows } => {
                let window = windows.get(&self.user_id).copied();
                self.incremental(Some(families), window).await
            }
        };
        // A part that stopped after its getmeas listing still commits it, stamped with the
        // zones learned so far (days learned later are re-stamped then: they are pending).
        if matches!(result, Err(Stop::Failed { .. } | Stop::Interrupted)) && self.held.is_some() {
            let _ = self.flush_getmeas().await;
        }
        match result {
            Err(Stop::Failed { class, error, family: None }) => {
                Err(Stop::Failed { class, error, family: *self.current.lock().expect("current lock") })
            }
            other => other,
        }
    }

    /// One step's requests to `e` (`planned` of them): none once the run is cancelled; the
    /// call gets the client and the user's token (refreshed and retried once on a 401).
    async fn request<T, F, Fut>(&self, e: Endpoint, planned: u64, call: F) -> Result<T, Stop>
    where
        F: Fn(WithingsClient, Secret) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::withings::WithingsError>>,
    {
        self.check_cancel()?;
        self.plan(e, planned);
        let c = &self.env.client;
        // Cancellation also reaches a request still waiting for the rate limiter (behind
        // live work, a backfill's can wait long).
        let mut cancel = self.env.cancel.clone();
        let cancelled = async move {
            // A dropped sender can never cancel.
            if cancel.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = self.env.tokens.with_token(&self.user_id, |t| call(c.clone(), t)) => Ok(r?),
            _ = cancelled => Err(Stop::Interrupted),
        }
    }

    async fn getmeas(&mut self, q: MeasQuery) -> Result<MeasureList, Stop> {
        let list = self
            .request(Endpoint::Getmeas, 1, |c, t| {
                let q = q.clone();
                async move { c.getmeas(&t, &q).await }
            })
            .await?;
        if let Some(tz) = &list.timezone {
            self.ctx.time_zone = Some(tz.clone());
        }
        Ok(list)
    }

    /// Heights for BMI: the state's, this answer's, and, when the user has none at all, one
    /// height-only listing of the whole history (not landed: its groups are partial).
    async fn heights_for(&mut self, list: &MeasureList, p: &mut Piece) -> Result<(), Stop> {
        let mut newest = latest_height(list);
        let has_weight = list.groups.iter().filter_map(|g| g.value.as_ref().ok()).any(|g| g.measures.iter().any(|m| m.kind == 1));
        if newest.is_none()
            && has_weight
            && self.state.height.is_none()
            && !self.state.height_looked_up
            && self.heights.is_empty()
        {
            let only = self.getmeas(MeasQuery { meastypes: vec![4], ..MeasQuery::default() }).await?;
            newest = latest_height(&only);
            self.state.height_looked_up = true;
            p.marks.push(Mark::HeightLookedUp);
        }
        for h in list.groups.iter().filter_map(|g| g.value.as_ref().ok()).flat_map(|g| {
            g.measures.iter().filter(|m| m.kind == 4).map(move |m| KnownHeight { at: g.date, value: m.value, unit: m.unit })
        }) {
            if let Some(v) = harmonize::scaled(h.value, h.unit) {
                self.heights.push((h.at, v));
            }
        }
        if let Some(h) = newest {
            if let Some(v) = harmonize::scaled(h.value, h.unit) {
                self.heights.push((h.at, v));
            }
            if self.state.height.is_none_or(|s| s.at <= h.at) {
                p.marks.push(Mark::Height(h));
            }
        }
        Ok(())
    }

    fn harmonize_getmeas(&self, p: &mut Piece, list: &MeasureList, coverage: Coverage) {
        self.land(p, Endpoint::Getmeas, raw::getmeas(&self.ctx, list));
        if let Some(tz) = &list.timezone {
            p.marks.push(Mark::TimeZone(tz.clone()));
        }
        self.add(p, harmonize::getmeas(&self.ctx, list, &self.heights), coverage);
    }

    async fn getactivity(&self, w: Window) -> Result<Vec<Item<Activity>>, Stop> {
        self.request(Endpoint::Getactivity, 1, |c, t| async move { c.getactivity(&t, w).await }).await
    }

    async fn getworkouts(&self, w: Window) -> Result<Vec<Item<crate::withings::types::Workout>>, Stop> {
        self.request(Endpoint::Getworkouts, 1, |c, t| async move { c.getworkouts(&t, w).await }).await
    }

    async fn getsummary(&self, w: Window) -> Result<Vec<Item<SleepSummary>>, Stop> {
        self.request(Endpoint::SleepGetsummary, 1, |c, t| async move { c.sleep_getsummary(&t, w).await }).await
    }

    /// Intraday for one local day (window replace over it): the day as the zone timeline
    /// spans it (a day flown east is 19 hours, west 29), else the day in `zone`.
    async fn intraday_day(&self, day: NaiveDate, zone: Option<&str>) -> Result<Piece, Stop> {
        let (a, b) = if self.ctx.zones.is_empty() {
            local_day(zone.or(self.ctx.time_zone.as_deref()), day)
        } else {
            self.ctx.zones.day_span(day)
        };
        let series = self
            .request(Endpoint::Getintradayactivity, chunks(a, b), |c, t| async move { c.getintradayactivity(&t, a, b).await })
            .await?;
        let mut p = self.piece();
        self.land(&mut p, Endpoint::Getintradayactivity, raw::getintradayactivity(&self.ctx, &series));
        self.add(&mut p, harmonize::getintradayactivity(&self.ctx, &series), self.window(Endpoint::Getintradayactivity, a, b));
        Ok(p)
    }

    /// Sleep get for one session (window replace over it).
    async fn sleep_session(&self, s: &SleepSession, sessions: &[SleepSession]) -> Result<Piece, Stop> {
        let (a, b) = (s.start, s.end.max(s.start + 1));
        let answer = self.request(Endpoint::SleepGet, chunks(a, b), |c, t| async move { c.sleep_get(&t, a, b).await }).await?;
        let mut ctx = self.ctx.clone();
        if let Some(tz) = &s.time_zone {
            ctx.time_zone = Some(tz.clone());
        }
        let mut p = self.piece();
        self.land(&mut p, Endpoint::SleepGet, raw::sleep_get(&ctx, &answer));
        let mut h = harmonize::sleep_get(&ctx, &answer, sessions);
        // A sleep_cycle row holds all of its session's segments: only this session's is whole
        // here (an overlapping session's segments reach into the window in part).
        h.keep_cycles_of(s.withings_id);
        self.add(&mut p, h, self.window(Endpoint::SleepGet, a, b));
        Ok(p)
    }

    /// A backfill of `r`: one listing per endpoint over the whole window, then intraday for
    /// the days with wearable data and sleep get per session, newest first. Windows already
    /// committed (the state's backfilled ranges) are skipped.
    async fn backfill(&mut self, r: DateRange) -> Result<(), Stop> {
        let decision = Decision::backfill(&self.env.families, &self.state, r);
        let (need_intraday, need_sleep) = (decision.fetches(Endpoint::Getintradayactivity), decision.fetches(Endpoint::SleepGet));
        let fetched: BTreeSet<Endpoint> = decision.fetch.clone();
        let (start, end) = utc_window(r);
        let dates = Window::Dates { from: r.from, to: r.to };
        // The resources this call completes, and those whose completion was never announced
        // (a backfill that failed part-way announced only what it completed): each announced
        // as soon as its families are done.
        let candidates = self.historical_due(&fetched, |_| true);
        let mut announced = BTreeSet::new();
        let mut finished: BTreeSet<Endpoint> = Endpoint::ALL.into_iter().filter(|e| !decision.fetches(*e)).collect();
        // A first cursor from a backfill: the newest `modified` seen, but never past the
        // window's last day (a historical window's edits must not hide the data after it,
        // and a listing by local date misses the next day where it has begun). The versions
        // this backfill handled are kept beside it ([`Mark::Handled`]) once the days and
        // sessions they imply are in: the next sync, which sees them again, does not fetch
        // those again.
        let done = |p: &mut Piece, e: Endpoint, raws: Option<i64>| {
            p.marks.push(Mark::Backfilled(e, r));
            if let Some(m) = raws {
                p.marks.push(Mark::CursorIfNone(e, m.min(end - 86_400)));
            }
            p.marks.push(Mark::Success(e));
        };
        let handled = |versions: &[(String, Option<i64>)]| {
            versions.iter().filter_map(|(k, v)| Some((k.clone(), (*v)?))).collect::<Vec<_>>()
        };

        // getmeas is listed first (its current zone is evidence) but harmonized once the
        // day-level records have told the zone of each day.
        let getmeas_window = (start - 14 * 3600, end + 12 * 3600);
        if decision.fetches(Endpoint::Getmeas) {
            // Every local day of the window, in any zone (UTC-12 to UTC+14): the answer is the
            // complete list of that span, which the window replace mirrors.
            let (a, b) = getmeas_window;
            let list = self.getmeas(MeasQuery { startdate: Some(a), enddate: Some(b - 1), ..MeasQuery::default() }).await?;
            let mut p = self.piece();
            self.heights_for(&list, &mut p).await?;
            self.learn_current_zone(&mut p, &list);
            done(&mut p, Endpoint::Getmeas, max_modified(list.groups.iter().map(|g| &g.raw)));
            // A listing over the whole re-list window up to now is that window's re-list: the
            // next sync need not list it again before `relist_every`.
            let now = self.env.now;
            if a <= now - i64::from(self.env.cfg.relist_days) * 86_400 && b > now {
                p.marks.push(Mark::Relisted(Endpoint::Getmeas, self.env.now_utc));
            }
            let coverage = self.window(Endpoint::Getmeas, a, b);
            self.held = Some((vec![(list, coverage)], p));
        }

        let mut activity = Vec::new();
        // Versions of listings whose detail family this call fetches: kept once it is done.
        let (mut activity_versions, mut summary_versions) = (Vec::new(), Vec::new());
        if decision.lists(Endpoint::Getactivity) {
            activity = self.getactivity(dates).await?;
            let mut p = self.piece();
            self.learn_zones(&mut p, harmonize::activity_evidence(&activity));
            self.land(&mut p, Endpoint::Getactivity, raw::getactivity(&self.ctx, &activity));
            if self.wants(Endpoint::Getactivity) {
                self.add(&mut p, harmonize::getactivity(&self.ctx, &activity), self.window(Endpoint::Getactivity, start, end));
                done(&mut p, Endpoint::Getactivity, max_modified(activity.iter().map(|i| &i.raw)));
                let versions: Vec<(String, Option<i64>)> =
                    activity.iter().map(|i| (activity_key(&i.raw), modified_of(&i.raw))).collect();
                activity_versions = handled(&versions);
                if !decision.fetches(Endpoint::Getintradayactivity) {
                    p.marks.push(Mark::Handled(Endpoint::Getactivity, std::mem::take(&mut activity_versions)));
                }
            }
            self.send(p).await?;
        }
        finished.insert(Endpoint::Getactivity);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;

        if decision.lists(Endpoint::Getworkouts) {
            let items = self.getworkouts(dates).await?;
            let mut p = self.piece();
            self.learn_zones(&mut p, harmonize::workout_evidence(&items));
            self.land(&mut p, Endpoint::Getworkouts, raw::by_id(&self.ctx, Endpoint::Getworkouts, &items));
            self.add(&mut p, harmonize::getworkouts(&self.ctx, &items), Coverage::Upsert);
            done(&mut p, Endpoint::Getworkouts, max_modified(items.iter().map(|i| &i.raw)));
            self.send(p).await?;
        }
        finished.insert(Endpoint::Getworkouts);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;

        let mut summaries = Vec::new();
        if decision.lists(Endpoint::SleepGetsummary) {
            summaries = self.getsummary(dates).await?;
            let mut p = self.piece();
            self.learn_zones(&mut p, harmonize::sleep_evidence(&summaries));
            self.land(&mut p, Endpoint::SleepGetsummary, raw::by_id(&self.ctx, Endpoint::SleepGetsummary, &summaries));
            self.add(&mut p, harmonize::sleep_getsummary(&self.ctx, &summaries), Coverage::Upsert);
            done(&mut p, Endpoint::SleepGetsummary, max_modified(summaries.iter().map(|i| &i.raw)));
            let versions: Vec<(String, Option<i64>)> =
                summaries.iter().map(|i| (summary_key(&i.raw), modified_of(&i.raw))).collect();
            summary_versions = handled(&versions);
            if !decision.fetches(Endpoint::SleepGet) {
                p.marks.push(Mark::Handled(Endpoint::SleepGetsummary, std::mem::take(&mut summary_versions)));
            }
            self.send(p).await?;
        }
        finished.insert(Endpoint::SleepGetsummary);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;

        self.flush_getmeas().await?;
        // getmeas over the pending days this call did not list.
        let listed: Vec<(i64, i64)> = if decision.fetches(Endpoint::Getmeas) { vec![getmeas_window] } else { Vec::new() };
        self.restamp_getmeas(&listed, true).await?;
        finished.insert(Endpoint::Getmeas);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;

        if need_intraday {
            for (day, zone) in wearable_days(&activity, |d| d >= r.from && d <= r.to).into_iter().rev() {
                if self.covered(Endpoint::Getintradayactivity, DateRange { from: day, to: day }) {
                    continue;
                }
                let mut p = self.fetch_intraday_day(day, zone.as_deref()).await?;
                p.marks.push(Mark::Backfilled(Endpoint::Getintradayactivity, DateRange { from: day, to: day }));
                self.send(p).await?;
            }
        }
        // The pending wearable days this window did not fetch.
        self.restamp_intraday(true).await?;
        if need_intraday {
            let mut p = self.piece();
            p.marks.push(Mark::Backfilled(Endpoint::Getintradayactivity, r));
            p.marks.push(Mark::Success(Endpoint::Getintradayactivity));
            if !activity_versions.is_empty() {
                p.marks.push(Mark::Handled(Endpoint::Getactivity, activity_versions));
            }
            self.send(p).await?;
        }
        finished.insert(Endpoint::Getintradayactivity);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;

        if need_sleep {
            let sessions = SleepSession::from_summaries(&summaries);
            let mut nights: BTreeMap<NaiveDate, Vec<&SleepSession>> = BTreeMap::new();
            for s in &sessions {
                nights.entry(wake_date(s)).or_default().push(s);
            }
            for (night, group) in nights.into_iter().rev() {
                let one = DateRange { from: night, to: night };
                if self.covered(Endpoint::SleepGet, one) {
                    continue;
                }
                for s in group {
                    let p = self.sleep_session(s, &sessions).await?;
                    self.send(p).await?;
                }
                let mut p = self.piece();
                p.marks.push(Mark::Backfilled(Endpoint::SleepGet, one));
                self.send(p).await?;
            }
        }

        // Every day of the window is done for sleep get, fetched or not needed.
        if need_sleep {
            let mut p = self.piece();
            p.marks.push(Mark::Backfilled(Endpoint::SleepGet, r));
            p.marks.push(Mark::Success(Endpoint::SleepGet));
            if !summary_versions.is_empty() {
                p.marks.push(Mark::Handled(Endpoint::SleepGetsummary, summary_versions));
            }
            self.send(p).await?;
        }
        finished.insert(Endpoint::SleepGet);
        self.announce_done(&candidates, &finished, &mut announced, (start, end)).await?;
        Ok(())
    }

    /// An incremental run: `lastupdate` listings from each cursor, intraday for the days whose
    /// activity changed, sleep get for new or changed sessions, and the daily getmeas re-list.
    /// `only` limits it to some families (a targeted refresh); `window` is a range of
    /// measurements listed again and replaced (a notification's).
    async fn incremental(&mut self, only: Option<&BTreeSet<Endpoint>>, window: Option<(i64, i64)>) -> Result<(), Stop> {
        // A listing's cursor decides which intraday days and sleep sessions count as changed:
        // refreshing a listing refreshes what depends on it, or those would be missed for good.
        let decision = Decision::incremental(&self.env.families, only);
        let (do_intraday, do_sleep) = (decision.fetches(Endpoint::Getintradayactivity), decision.fetches(Endpoint::SleepGet));
        let now = self.env.now;
        let overlap = self.env.cfg.cursor_overlap;
        let initial = now - i64::from(self.env.cfg.backfill_days) * 86_400;
        let since = |s: &Self, e: Endpoint| s.family_cursor(e).map(|c| c - overlap).unwrap_or(initial).max(0);
        let finish = |p: &mut Piece, e: Endpoint, m: Option<i64>| {
            if let Some(m) = m {
                p.marks.push(Mark::Cursor(e, m, Vec::new()));
            }
            p.marks.push(Mark::Success(e));
        };
        // Changed: modified after the cursor minus the overlap (a record of the cursor's own
        // second, or indexed late, counts), unless this very version was already handled; or
        // without a `modified` at all.
        // A family seen for the first time brings the user's history: its pieces
        // are historical, announced by one `historical.data.*` event per resource at the end.
        let first: BTreeSet<Endpoint> = Endpoint::ALL
            .into_iter()
            .filter(|e| {
                let listing = e.listing();
                // Never synced: a family that a backfill or a sync finished has a success.
                decision.fetches(*e) && self.state.families.get(listing.as_str()).is_none_or(|f| f.last_success.is_none())
            })
            .collect();
        let piece_of = |s: &Self, e: Endpoint| Piece { historical: first.contains(&e), ..s.piece() };
        let changed = |s: &Self, e: Endpoint, key: &str, m: Option<i64>| -> bool {
            let f = s.state.families.get(e.as_str());
            match (f.and_then(|f| f.cursor), m) {
                (None, _) | (_, None) => true,
                (Some(c), Some(m)) => m > c - overlap && f.and_then(|f| f.recent.get(key)) != Some(&m),
            }
        };

        // getmeas is listed first (its current zone is evidence) but harmonized once the
        // day-level records have told the zone of each day (or when a later step fails).
        let mut relisted = Vec::new();
        if decision.fetches(Endpoint::Getmeas) {
            let mut p = piece_of(self, Endpoint::Getmeas);
            let mut lists = Vec::new();
            if relist_due(&self.env, &self.state) {
                let (a, b) = (now - i64::from(self.env.cfg.relist_days) * 86_400, now + 86_400);
                let list = self.getmeas(MeasQuery { startdate: Some(a), enddate: Some(b - 1), ..MeasQuery::default() }).await?;
                self.heights_for(&list, &mut p).await?;
                self.learn_current_zone(&mut p, &list);
                p.marks.push(Mark::Relisted(Endpoint::Getmeas, self.env.now_utc));
                relisted.push((a, b));
                lists.push((list, self.window(Endpoint::Getmeas, a, b)));
            } else if let Some((a, b)) = window.filter(|(a, b)| a < b) {
                // The notified range: what Withings lists there now replaces the lake's rows.
                let list = self.getmeas(MeasQuery { startdate: Some(a), enddate: Some(b - 1), ..MeasQuery::default() }).await?;
                self.heights_for(&list, &mut p).await?;
                self.learn_current_zone(&mut p, &list);
                relisted.push((a, b));
                lists.push((list, self.window(Endpoint::Getmeas, a, b)));
            }
            let list =
                self.getmeas(MeasQuery { lastupdate: Some(since(self, Endpoint::Getmeas)), ..MeasQuery::default() }).await?;
            self.heights_for(&list, &mut p).await?;
            self.learn_current_zone(&mut p, &list);
            finish(&mut p, Endpoint::Getmeas, max_modified(list.groups.iter().map(|g| &g.raw)));
            lists.push((list, Coverage::Upsert));
            self.held = Some((lists, p));
        }

        if decision.lists(Endpoint::Getactivity) {
            let items = self.getactivity(Window::LastUpdate(since(self, Endpoint::Getactivity))).await?;
            let mut p = piece_of(self, Endpoint::Getactivity);
            self.learn_zones(&mut p, harmonize::activity_evidence(&items));
            self.land(&mut p, Endpoint::Getactivity, raw::getactivity(&self.ctx, &items));
            self.add(&mut p, harmonize::getactivity(&self.ctx, &items), Coverage::Upsert);
            let m = max_modified(items.iter().map(|i| &i.raw));
            let versions: Vec<(String, Option<i64>)> =
                items.iter().map(|i| (activity_key(&i.raw), modified_of(&i.raw))).collect();
            let changed: Vec<Item<Activity>> = items
                .into_iter()
                .zip(&versions)
                .filter(|(_, (k, v))| changed(self, Endpoint::Getactivity, k, *v))
                .map(|(i, _)| i)
                .collect();
            self.send(p).await?;
            if do_intraday {
                for (day, zone) in wearable_days(&changed, |_| true).into_iter().rev() {
                    let mut p = self.fetch_intraday_day(day, zone.as_deref()).await?;
                    p.historical = first.contains(&Endpoint::Getintradayactivity);
                    self.send(p).await?;
                }
            }
            // The wearable days whose zone or span changed (their rows take it again).
            self.restamp_intraday(do_intraday).await?;
            // The cursor moves once the intraday days it implies are in: after a failure, the
            // next run sees the same days as changed.
            let mut p = self.piece();
            finish(&mut p, Endpoint::Getactivity, m);
            remember(&mut p, Endpoint::Getactivity, &versions);
            if do_intraday {
                p.marks.push(Mark::Success(Endpoint::Getintradayactivity));
            }
            self.send(p).await?;
        }

        if decision.fetches(Endpoint::Getworkouts) {
            let items = self.getworkouts(Window::LastUpdate(since(self, Endpoint::Getworkouts))).await?;
            let mut p = piece_of(self, Endpoint::Getworkouts);
            self.learn_zones(&mut p, harmonize::workout_evidence(&items));
            self.land(&mut p, Endpoint::Getworkouts, raw::by_id(&self.ctx, Endpoint::Getworkouts, &items));
            self.add(&mut p, harmonize::getworkouts(&self.ctx, &items), Coverage::Upsert);
            finish(&mut p, Endpoint::Getworkouts, max_modified(items.iter().map(|i| &i.raw)));
            self.send(p).await?;
        }

        if decision.lists(Endpoint::SleepGetsummary) {
            let items = self.getsummary(Window::LastUpdate(since(self, Endpoint::SleepGetsummary))).await?;
            let mut p = piece_of(self, Endpoint::SleepGetsummary);
            self.learn_zones(&mut p, harmonize::sleep_evidence(&items));
            self.land(&mut p, Endpoint::SleepGetsummary, raw::by_id(&self.ctx, Endpoint::SleepGetsummary, &items));
            self.add(&mut p, harmonize::sleep_getsummary(&self.ctx, &items), Coverage::Upsert);
            let m = max_modified(items.iter().map(|i| &i.raw));
            let sessions = SleepSession::from_summaries(&items);
            let versions: Vec<(String, Option<i64>)> = items.iter().map(|i| (summary_key(&i.raw), modified_of(&i.raw))).collect();
            let changed: BTreeSet<i64> = items
                .iter()
                .zip(&versions)
                .filter(|(_, (k, v))| changed(self, Endpoint::SleepGetsummary, k, *v))
                .filter_map(|(i, _)| i.value.as_ref().ok().map(|s| s.id))
                .collect();
            self.send(p).await?;
            if do_sleep {
                for s in sessions.iter().rev().filter(|s| changed.contains(&s.withings_id)) {
                    let mut p = self.sleep_session(s, &sessions).await?;
                    p.historical = first.contains(&Endpoint::SleepGet);
                    self.send(p).await?;
                }
            }
            let mut p = self.piece();
            finish(&mut p, Endpoint::SleepGetsummary, m);
            remember(&mut p, Endpoint::SleepGetsummary, &versions);
            if do_sleep {
                p.marks.push(Mark::Success(Endpoint::SleepGet));
            }
            self.send(p).await?;
        }

        // getmeas, stamped with the zones of their days; then the pending days listed again
        // (a window replace), unless this run may not list getmeas (a refresh of others).
        self.flush_getmeas().await?;
        self.restamp_getmeas(&relisted, decision.fetches(Endpoint::Getmeas)).await?;
        // Intraday pending days left by evidence learned after the intraday step (workouts,
        // sleep) wait for the next run that fetches intraday.
        // The resources whose first sync this was, and those never announced whose families
        // have all succeeded by now (a first sync that failed part-way announces nothing).
        let resources = self.historical_due(&first, |r| {
            plan::families_for(&[r])
                .iter()
                .filter(|f| self.wants(**f))
                .all(|f| decision.fetches(*f) || self.state.families.get(f.as_str()).is_some_and(|s| s.last_success.is_some()))
        });
        if !resources.is_empty() {
            let mut p = self.piece();
            p.marks.push(Mark::Historical { resources, start: initial, end: now });
            self.send(p).await?;
        }
        Ok(())
    }
}

/// Whether an incremental run re-lists the trailing getmeas window: once every
/// `relist_every`, for users who have a cursor (a first sync lists everything anyway).
fn relist_due(env: &Env, state: &UserState) -> bool {
    let getmeas = state.families.get(Endpoint::Getmeas.as_str());
    env.cfg.relist_every.is_some_and(|every| {
        getmeas.is_some_and(|f| f.cursor.is_some())
            && getmeas.and_then(|f| f.relisted_at).is_none_or(|t| (env.now_utc - t).to_std().unwrap_or_default() >= every)
    })
}

/// The local wake-up date of a session (Withings' `date` of a summary).
fn wake_date(s: &SleepSession) -> NaiveDate {
    let zone = crate::harmonize::Zone::new(s.time_zone.as_deref());
    zone.local_date(s.end).unwrap_or_else(|| chrono::DateTime::from_timestamp(s.end, 0).unwrap_or_default().date_naive())
}

/// Local days (with their zone) whose activity comes from a Withings wearable, ascending.
fn wearable_days(items: &[Item<Activity>], keep: impl Fn(NaiveDate) -> bool) -> Vec<(NaiveDate, Option<String>)> {
    let mut days: BTreeMap<NaiveDate, Option<String>> = BTreeMap::new();
    for a in items.iter().filter_map(|i| i.value.as_ref().ok()) {
        if a.is_tracker != Some(true) {
            continue;
        }
        let Ok(day) = a.date.parse::<NaiveDate>() else { continue };
        if keep(day) {
            let zone = days.entry(day).or_default();
            if zone.is_none() {
                *zone = a.timezone.clone();
            }
        }
    }
    days.into_iter().collect()
}

/// Estimated requests of one user (`--dry-run`), from the same decisions the run makes.
pub(crate) fn estimate(env: &Env, mode: &Mode, state: &UserState, e: &mut plan::Estimate) {
    match mode {
        Mode::Backfill { from, to } => {
            let r = DateRange { from: *from, to: *to };
            let d = Decision::backfill(&env.families, state, r);
            for f in &d.list {
                e.add(*f, 1);
            }
            if d.fetches(Endpoint::Getmeas) && state.height.is_none() && !state.height_looked_up {
                e.add(Endpoint::Getmeas, 1);
            }
            for f in [Endpoint::Getintradayactivity, Endpoint::SleepGet] {
                if d.fetches(f) {
                    e.add(f, plan::days_missing(state, f, r));
                }
            }
        }
        Mode::Incremental | Mode::Refresh { .. } => {
            let (only, window) = match mode {
                Mode::Refresh { families, windows } => (Some(families), windows.get(&state.user_id)),
                _ => (None, None),
            };
            let d = Decision::incremental(&env.families, only);
            for f in &d.list {
                e.add(*f, 1);
            }
            if d.fetches(Endpoint::Getmeas) && (relist_due(env, state) || window.is_some()) {
                e.add(Endpoint::Getmeas, 1);
            }
            let days_since = |f: Endpoint| -> u64 {
                let cursor = state.families.get(f.as_str()).and_then(|s| s.cursor);
                let span = cursor.map(|c| env.now - c).unwrap_or(i64::from(env.cfg.backfill_days) * 86_400);
                (span.max(0) / 86_400 + 1) as u64
            };
            for f in [Endpoint::Getintradayactivity, Endpoint::SleepGet] {
                if d.fetches(f) {
                    e.add(f, days_since(f.listing()));
                }
            }
        }
    }
}
