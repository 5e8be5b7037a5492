//! `tcpstate timewait` on a terminal: a full-screen view (ratatui on
//! crossterm) that fits any size and is steered with keys. It is the
//! printer of the live view when standard output is a terminal: each
//! refresh hands it a frame ([`state::Model`]), keys regroup, sort,
//! filter and scroll at once ([`state::Ui`]), [`draw`] lays it out. The
//! terminal is restored on quit, on error and on panic; the summary
//! follows on stderr.

pub mod draw;
pub mod state;

use std::{
    io::{self, Stdout},
    sync::mpsc,
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};
use state::{Grouping, Key, Model, Row, Typed, Ui};

use super::{Frame, Printer, Report, Summary, text};
use crate::{
    cli::{Cli, Command},
    messages,
    track::{
        timewait::{Entry, ExitReason, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Transition},
    },
};

/// What the input thread passes on.
enum Input {
    Key(Key),
    Resize,
}

/// The full-screen view.
pub struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    input: mpsc::Receiver<Input>,
    model: Model,
    ui: Ui,
    rows: Vec<Row>,
    /// The terminal is in raw mode on the alternate screen.
    active: bool,
    error: Option<io::Error>,
}

impl Tui {
    /// Takes the terminal over: raw mode, the alternate screen, a thread
    /// reading keys, and a panic hook that gives the terminal back first.
    pub fn start(grouping: Grouping, interval: Duration) -> io::Result<Tui> {
        enable_raw_mode()?;
        messages::hold();
        let started = take_over().and_then(|()| {
            let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            terminal.hide_cursor()?;
            terminal.clear()?;
            Ok(terminal)
        });
        let terminal = match started {
            Ok(terminal) => terminal,
            Err(e) => {
                restore_terminal();
                messages::release();
                return Err(e);
            }
        };
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        let (send, input) = mpsc::channel();
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || {
                while let Ok(event) = event::read() {
                    let input = match event {
                        Event::Key(k) if k.kind != KeyEventKind::Release => match key_of(k) {
                            Some(key) => Input::Key(key),
                            None => continue,
                        },
                        Event::Resize(..) => Input::Resize,
                        _ => continue,
                    };
                    if send.send(input).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Tui {
            terminal,
            input,
            model: Model::default(),
            ui: Ui::new(grouping, interval.as_secs_f64()),
            rows: Vec::new(),
            active: true,
            error: None,
        })
    }

    fn redraw(&mut self) {
        if !self.active || self.error.is_some() {
            return;
        }
        self.ui.message = messages::latest_held();
        let (model, ui, rows) = (&self.model, &self.ui, &self.rows);
        if let Err(e) = self.terminal.draw(|f| draw::draw(f, model, ui, rows)) {
            self.error = Some(e);
        }
    }

    /// Gives the terminal back.
    fn restore(&mut self) {
        if std::mem::take(&mut self.active) {
            let _ = self.terminal.show_cursor();
            restore_terminal();
            messages::release();
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Enters the alternate screen.
fn take_over() -> io::Result<()> {
    execute!(io::stdout(), EnterAlternateScreen)
}

/// Leaves the alternate screen and raw mode (also from the panic hook).
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen);
}

fn key_of(k: event::KeyEvent) -> Option<Key> {
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

/// A filter typed at the prompt, read as `timewait`'s own options.
fn parse(text: &str) -> Result<Typed, String> {
    let args = ["tcpstate", "timewait"]
        .into_iter()
        .chain(text.split_whitespace());
    let cli = <Cli as clap::Parser>::try_parse_from(args).map_err(|e| {
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })?;
    match cli.command {
        Command::Timewait(t) => Ok(Typed {
            text: text.trim().to_string(),
            filter: t.common.filter(),
            settings: t.common.settings(),
        }),
        _ => Err("not a filter".into()),
    }
}

impl Printer for Tui {
    fn report(&mut self, _: &Report<'_>) {}

    fn timewait(&mut self, frame: &Frame<'_>) {
        self.model.update(frame);
        self.rows = self.ui.rows(&self.model);
        self.redraw();
    }

    /// After the terminal is given back, on stderr as ever.
    fn summary(&mut self, s: &Summary) {
        self.restore();
        text::summary(s);
    }

    fn flush(&mut self) {}

    fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// Keys since the last look, applied and drawn.
    fn poll(&mut self) {
        let mut changed = false;
        while let Ok(input) = self.input.try_recv() {
            changed = true;
            if let Input::Key(key) = input {
                let area = self.terminal.size().unwrap_or_default();
                let page = draw::page(area.into(), &self.model, self.ui.detail);
                let (grouping, sort, filter) =
                    (self.ui.grouping, self.ui.sort, self.ui.filter.is_some());
                self.ui.key(key, page, self.rows.len(), parse);
                if (grouping, sort, filter)
                    != (self.ui.grouping, self.ui.sort, self.ui.filter.is_some())
                    || key == Key::Enter
                {
                    self.rows = self.ui.rows(&self.model);
                }
            }
        }
        if changed {
            self.redraw();
        }
    }

    fn quit(&self) -> bool {
        self.ui.quit
    }

    fn interval(&self) -> Option<Duration> {
        Some(Duration::from_secs_f64(self.ui.interval_s))
    }
}

/// The view takes no per-event output.
impl Sink for Tui {
    fn transition(&mut self, _: &Transition) {}
    fn close(&mut self, _: &Close) {}
    fn connect_failed(&mut self, _: &ConnectFailure) {}
    fn bind_failed(&mut self, _: &BindFailure) {}
}

impl TwSink for Tui {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}
