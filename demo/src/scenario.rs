//! The demo itself: a steady load, and under it each component killed, held down, restored,
//! and waited for until the whole stack is healthy again; then the verdict.
//!
//! [`Scenario::run`] is what `make demo` runs and what the stack's tests call: it prints its
//! progress and a line per second through the `out` function it is given, and returns a
//! [`Report`] with everything the table, the picture and a test's assertions need.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use tokio::task::JoinSet;

use crate::account::{self, ComponentResult, Targets, Window};
use crate::compose::{self, Compose};
use crate::load::{Load, LoadConfig, Records};
use crate::record::Record;
use crate::svg;
use crate::timeline::{self, Event, EventKind, Second};
use crate::verify::newest_post_id;
use crate::verify::{self, Verification};
use crate::visitor::{Visitor, VisitorConfig};

/// Time for the compose commands of one kill, on top of the waits.
const COMMANDS_ALLOWANCE: Duration = Duration::from_secs(60);

/// Everything the demo can be told.
#[derive(Debug, Clone)]
pub struct Config {
    pub visitor: VisitorConfig,
    pub load: LoadConfig,
    /// The folder of the stack's docker-compose.yml.
    pub compose_dir: PathBuf,
    /// Another compose file than the folder's own.
    pub compose_file: Option<PathBuf>,
    /// An environment file for compose (`--env-file`): the project's name, ports, addresses.
    pub compose_env_file: Option<PathBuf>,
    /// Killed in this order, each restored before the next.
    pub components: Vec<String>,
    /// Load before the first kill.
    pub warmup: Duration,
    /// How long a killed component stays down.
    pub hold: Duration,
    /// Load between all-healthy and the next kill.
    pub settle: Duration,
    /// Longest wait for all-healthy after a restore, before the demo gives up.
    pub healthy_timeout: Duration,
    pub targets: Targets,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            visitor: VisitorConfig::default(),
            load: LoadConfig::default(),
            compose_dir: PathBuf::from("."),
            compose_file: None,
            compose_env_file: None,
            components: [
                "dns-1",
                "dns-2",
                "web-a",
                "lb-1",
                "router-a",
                "db-replica",
                "db-primary",
            ]
            .map(String::from)
            .to_vec(),
            warmup: Duration::from_secs(5),
            hold: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            healthy_timeout: Duration::from_secs(120),
            targets: Targets::default(),
        }
    }
}

/// The demo's results.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per component killed, in order.
    pub components: Vec<ComponentResult>,
    /// Components not killed because the stack did not get healthy again before them.
    pub skipped: Vec<String>,
    pub verification: Verification,
    pub seconds: Vec<Second>,
    pub events: Vec<Event>,
    pub requests: usize,
    pub failed: usize,
    pub duration: Duration,
    pub targets: Targets,
}

impl Report {
    /// Every target met, every component killed, nothing lost or doubled.
    pub fn passed(&self) -> bool {
        self.skipped.is_empty()
            && self.verification.passed()
            && self
                .components
                .iter()
                .all(|c| c.verdict(&self.targets).passed())
    }

    /// The table, the write check and the overall verdict, for a person.
    pub fn text(&self) -> String {
        let mut text = account::table(&self.components, &self.targets);
        if !self.skipped.is_empty() {
            text.push_str(&format!(
                "not killed (stack not healthy): {} FAIL\n",
                self.skipped.join(", ")
            ));
        }
        text.push_str(&self.verification.summary());
        text.push('\n');
        text.push_str(&format!(
            "{} requests in {:.0}s, {} failed: {}\n",
            self.requests,
            self.duration.as_secs_f64(),
            self.failed,
            if self.passed() {
                "every target met"
            } else {
                "some targets missed"
            }
        ));
        text
    }

    pub fn svg(&self) -> String {
        svg::render(
            &self.seconds,
            &self.events,
            "foobar failover demo: requests per second as a visitor saw them",
        )
    }
}

/// The DNS servers a visitor asks, for progress lines.
fn servers(visitor: &VisitorConfig) -> String {
    let servers: Vec<String> = visitor.dns_servers.iter().map(|s| s.to_string()).collect();
    servers.join(", ")
}

/// The kill-restore sequence around the load.
pub struct Scenario;

impl Scenario {
    /// Runs the demo against the running stack; `out` receives progress and timeline lines.
    pub async fn run<F>(config: &Config, out: F) -> anyhow::Result<Report>
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        let out: Out = Arc::new(out);
        let compose = Compose::new(
            config.compose_dir.clone(),
            config.compose_file.clone(),
            config.compose_env_file.clone(),
        );
        let t0 = Instant::now();
        let progress = |text: &str| out(&format!("==> [{:>3}s] {text}", t0.elapsed().as_secs()));

        progress("checking that every service of the stack is up and healthy");
        let states = compose.states().await?;
        let services = compose::long_running(&compose.services().await?, &states);
        for component in &config.components {
            ensure!(
                services.contains(component),
                "{component} is not a service of the stack ({})",
                services.join(", ")
            );
        }
        let not_healthy = compose::not_healthy(&services, &states);
        if !not_healthy.is_empty() {
            bail!(
                "not healthy: {} (start the stack first: make up)",
                not_healthy.join(", ")
            );
        }
        let visitor_config = Arc::new(config.visitor.clone());
        let mut checker = Visitor::new(Arc::clone(&visitor_config))?;
        let before_run = newest_post_id(&mut checker).await.map_err(|e| {
            e.context(format!(
                "https://{} does not answer through the DNS servers at {}",
                config.visitor.host,
                servers(&config.visitor)
            ))
        })?;

        let mut load_config = config.load.clone();
        // Longer than the scenario can take, so the load stops by itself only if it hangs.
        let phases = config.hold + config.healthy_timeout + config.settle + COMMANDS_ALLOWANCE;
        load_config.max_duration = load_config
            .max_duration
            .min(config.warmup + phases * config.components.len() as u32 + COMMANDS_ALLOWANCE);
        if load_config.run_id.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            load_config.run_id = format!("run {}", now.as_secs());
        }
        progress(&format!(
            "load: {} readers ({}/s), {} writers ({}/s), through {} at {}",
            load_config.readers,
            load_config.read_rate,
            load_config.writers,
            load_config.write_rate,
            config.visitor.host,
            servers(&config.visitor)
        ));
        let load = Load::start(Arc::clone(&visitor_config), &load_config, t0)?;
        let phase = Arc::new(Mutex::new("warm-up".to_owned()));
        let mut ticker = JoinSet::new();
        ticker.spawn(live_lines(
            load.records(),
            Arc::clone(&phase),
            t0,
            Arc::clone(&out),
        ));
        let set_phase = |text: String| *phase.lock().expect("phase lock") = text;

        tokio::time::sleep(config.warmup).await;
        let mut events = Vec::new();
        let mut windows: Vec<Window> = Vec::new();
        let mut skipped = Vec::new();
        for (i, component) in config.components.iter().enumerate() {
            if windows.last().is_some_and(|w| w.healthy.is_none()) {
                skipped.extend(config.components[i..].iter().cloned());
                break;
            }
            let killed = t0.elapsed();
            progress(&format!("kill {component} (SIGKILL)"));
            set_phase(format!("killed {component}"));
            compose.kill(component).await?;
            events.push(event(killed, EventKind::Killed, component));
            tokio::time::sleep(config.hold).await;

            progress(&format!("restore {component}"));
            compose.start(component).await?;
            let restored = t0.elapsed();
            events.push(event(restored, EventKind::Restored, component));
            set_phase(format!("restored {component}"));

            let healthy = wait_healthy(&compose, &services, config.healthy_timeout, t0).await?;
            match healthy {
                Some(at) => {
                    progress(&format!(
                        "every service healthy again, {:.1}s after the restore",
                        (at - restored).as_secs_f64()
                    ));
                    events.push(event(at, EventKind::Healthy, component));
                }
                None => progress(&format!(
                    "the stack is not healthy {:?} after restoring {component}: stopping the kills",
                    config.healthy_timeout
                )),
            }
            set_phase(format!("after {component}"));
            windows.push(Window {
                component: component.clone(),
                killed,
                restored,
                healthy,
                end: Duration::MAX,
            });
            if healthy.is_some() {
                tokio::time::sleep(config.settle).await;
            }
        }

        progress("stopping the load");
        let records = load.stop().await;
        ticker.abort_all();
        let load_end = records.iter().map(Record::end).max().unwrap_or_default();
        let next_kills: Vec<Duration> = windows.iter().skip(1).map(|w| w.killed).collect();
        for (window, next) in windows
            .iter_mut()
            .zip(next_kills.into_iter().map(Some).chain([None]))
        {
            window.end = next.unwrap_or(load_end + Duration::from_millis(1));
        }

        let written = records.iter().filter(|r| r.marker.is_some()).count();
        progress(&format!(
            "checking {written} writes against the database, through the stack"
        ));
        let verification = verify::verify(&mut checker, &records, before_run).await?;
        let lost: HashSet<String> = verification.lost.iter().cloned().collect();
        let components = account::account(&records, &windows, &lost, &config.targets);
        Ok(Report {
            components,
            skipped,
            verification,
            seconds: timeline::seconds(&records),
            events,
            requests: records.len(),
            failed: records.iter().filter(|r| !r.ok()).count(),
            duration: load_end,
            targets: config.targets.clone(),
        })
    }
}

fn event(at: Duration, kind: EventKind, component: &str) -> Event {
    Event {
        at,
        kind,
        component: component.to_owned(),
    }
}

/// Polls the services' health every second; when all are healthy, the time since `t0`.
async fn wait_healthy(
    compose: &Compose,
    services: &[String],
    within: Duration,
    t0: Instant,
) -> anyhow::Result<Option<Duration>> {
    let deadline = Instant::now() + within;
    loop {
        if compose.not_healthy(services).await?.is_empty() {
            return Ok(Some(t0.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type Out = Arc<dyn Fn(&str) + Send + Sync>;

/// One line per second: what ended in the last second, and the current phase.
async fn live_lines(records: Records, phase: Arc<Mutex<String>>, t0: Instant, out: Out) {
    let mut seen = 0;
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::from_std(t0) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        ticks.tick().await;
        let mut second = Second {
            at: t0.elapsed().as_secs().saturating_sub(1),
            ..Second::default()
        };
        {
            let records = records.lock().expect("records lock");
            for record in &records[seen..] {
                second.add(record);
            }
            seen = records.len();
        }
        let phase = phase.lock().expect("phase lock").clone();
        out(&second.line(&phase));
    }
}
