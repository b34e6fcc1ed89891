//! What the command line shows of the libraries' `tracing` events: [`LineLayer`] prints each
//! event as one line and draws a training run's progress events
//! ([`l2d_train::PROGRESS_TARGET`]) as a bar on a terminal; [`init`] installs it.
//!
//! The libraries only emit events (the training run's set-up, steps and validations, the
//! sweep's settings, the demo's stages); what is shown, and how, is the front end's choice.
//! A program of your own can install any subscriber instead (`tracing_subscriber::fmt`, a JSON
//! layer): the events carry their numbers as fields (`step`, `loss`, `lr`, `grad_norm`, ...).

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where [`LineLayer`] writes its lines.
type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// A `tracing` layer that writes each event's message as a line (prefixed `warning: ` or
/// `error: ` at those levels), and turns the training run's progress events into a bar when it
/// writes to a terminal (the step lines then update the bar instead of scrolling; every other
/// line prints above it). Writing is best effort: a stream that cannot be written never stops
/// the work.
pub struct LineLayer {
    sink: Sink,
    draw_bar: bool,
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl fmt::Debug for LineLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineLayer")
            .field("draw_bar", &self.draw_bar)
            .finish_non_exhaustive()
    }
}

impl LineLayer {
    /// Lines on standard error, with a progress bar when standard error is a terminal.
    pub fn stderr() -> Self {
        LineLayer {
            sink: Arc::new(|line| {
                let _ = writeln!(std::io::stderr(), "{line}");
            }),
            draw_bar: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    /// Lines on standard output, no bar (the examples' reports).
    pub fn stdout() -> Self {
        Self::to(|line| {
            let _ = writeln!(std::io::stdout(), "{line}");
        })
    }

    /// Lines to `sink` (for instance a `Vec` behind a mutex, to read them back), no bar.
    pub fn to(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        LineLayer {
            sink: Arc::new(sink),
            draw_bar: false,
            bar: Mutex::new(None),
        }
    }

    fn write(&self, bar: Option<&indicatif::ProgressBar>, line: &str) {
        match bar {
            Some(bar) => bar.println(line),
            None => (self.sink)(line),
        }
    }
}

/// The fields [`LineLayer`] reads from an event.
#[derive(Default)]
struct Fields {
    message: String,
    step: Option<u64>,
    total_steps: Option<u64>,
    finished: bool,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "step" => self.step = Some(value),
            "total_steps" => self.total_steps = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "finished" {
            self.finished = value;
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        // A poisoned lock only means another thread panicked while printing: keep printing.
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let metadata = event.metadata();
        if metadata.target() == l2d_train::PROGRESS_TARGET && self.draw_bar {
            if fields.finished {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                return;
            }
            let bar = bar.get_or_insert_with(|| new_bar(fields.total_steps.unwrap_or(0)));
            if let Some(total) = fields.total_steps {
                bar.set_length(total);
            }
            if let Some(step) = fields.step {
                bar.set_position(step);
            }
            bar.set_message(fields.message);
            return;
        }
        let line = match *metadata.level() {
            Level::ERROR => format!("error: {}", fields.message),
            Level::WARN => format!("warning: {}", fields.message),
            _ => fields.message,
        };
        self.write(bar.as_ref(), &line);
    }
}

fn new_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Which events are shown: `RUST_LOG` when it is set and parses as `tracing-subscriber`'s
/// target list (`l2d_train=debug,warn`), otherwise the `l2d*` crates' events from `info` up
/// (from `warn` when `quiet`) and other crates' from `warn`.
pub fn filter(quiet: bool) -> Targets {
    if let Some(targets) = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
    {
        return targets;
    }
    let ours = if quiet { Level::WARN } else { Level::INFO };
    Targets::new()
        .with_target("l2d", ours)
        .with_default(Level::WARN)
}

/// Installs `layer` behind [`filter`] as the process's subscriber. Does nothing when one is
/// already installed (a program embedding the commands keeps its own).
pub fn init_with(layer: LineLayer, quiet: bool) {
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter(quiet)))
        .try_init();
}

/// [`init_with`] [`LineLayer::stderr`]: what the `l2d` binary installs.
pub fn init(quiet: bool) {
    init_with(LineLayer::stderr(), quiet);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> (LineLayer, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        (
            LineLayer::to(move |l| sink.lock().unwrap().push(l.into())),
            lines,
        )
    }

    #[test]
    fn events_become_lines_with_their_level() {
        let (layer, lines) = capture();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(step = 3, "plain {}", 1);
            tracing::warn!("careful");
            tracing::error!("broken");
            // Off a terminal, progress events are lines too.
            tracing::info!(target: l2d_train::PROGRESS_TARGET, step = 2u64, total_steps = 5u64, "step 2/5");
        });
        assert_eq!(
            *lines.lock().unwrap(),
            ["plain 1", "warning: careful", "error: broken", "step 2/5"]
        );
    }

    #[test]
    fn the_default_filter_shows_our_info_and_others_warnings() {
        // RUST_LOG would replace the default; the test only runs the default when unset.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let (layer, lines) = capture();
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter(false)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "l2d_train", "ours");
            tracing::info!(target: "burn_flex", "theirs");
            tracing::warn!(target: "burn_flex", "their warning");
            tracing::debug!(target: "l2d_train", "detail");
        });
        assert_eq!(*lines.lock().unwrap(), ["ours", "warning: their warning"]);
        let (layer, lines) = capture();
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter(true)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "l2d::eval", "ours");
            tracing::warn!(target: "l2d::eval", "our warning");
        });
        assert_eq!(*lines.lock().unwrap(), ["warning: our warning"]);
    }
}
