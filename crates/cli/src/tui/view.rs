//! Drawing the state: tabs and connection on top, the table (and the
//! logs pane under it), progress bars, the last message and the keys.
//! Made for 80x24; narrower, the table drops its least useful columns
//! first and the key line is cut.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Table, TableState};

use super::app::{App, Connection, FormKind, Modal, Tab, state_label};
use crate::output::human_bytes;

pub fn draw(f: &mut Frame, app: &App) {
    let ops = app.operations.len().min(3) as u16;
    let [top, main, progress, message, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(ops),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_top(f, app, top);
    match &app.logs {
        Some(_) => {
            let [table, logs] =
                Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)])
                    .areas(main);
            draw_table(f, app, table);
            draw_logs(f, app, logs);
        }
        None => draw_table(f, app, main),
    }
    draw_progress(f, app, progress);
    draw_message(f, app, message);
    f.render_widget(
        Paragraph::new(key_help(app)).style(Style::new().add_modifier(Modifier::REVERSED)),
        keys,
    );
    if let Some(modal) = &app.modal {
        draw_modal(f, modal);
    }
}

fn draw_top(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::styled(
        "banger ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let style = if *tab == app.tab {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {} {} ", i + 1, tab.title()), style));
    }
    let (status, color) = match &app.connection {
        Connection::Connecting => ("connecting…".to_string(), Color::Yellow),
        Connection::Connected => ("● bangerd".to_string(), Color::Green),
        Connection::Lost(_) => ("bangerd not answering: reconnecting…".into(), Color::Red),
    };
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(status.chars().count() as u16),
    ])
    .areas(area);
    f.render_widget(Line::from(spans), left);
    f.render_widget(Span::styled(status, Style::new().fg(color)), right);
}

/// A column: its header, its width, and how readily it goes when the
/// terminal is narrow (higher goes first; 0 never).
struct Column {
    header: &'static str,
    width: u16,
    drop: u8,
}

const fn col(header: &'static str, width: u16, drop: u8) -> Column {
    Column {
        header,
        width,
        drop,
    }
}

/// The columns that fit in `width`, as their indices in order.
fn fitting(cols: &[Column], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let need = |keep: &[usize]| -> u16 {
        keep.iter().map(|&i| cols[i].width + 1).sum::<u16>() + 2 // highlight mark
    };
    while need(&keep) > width {
        let Some((pos, _)) = keep
            .iter()
            .enumerate()
            .filter(|(_, i)| cols[**i].drop > 0)
            .max_by_key(|(_, i)| cols[**i].drop)
        else {
            break;
        };
        keep.remove(pos);
    }
    keep
}

fn draw_table(f: &mut Frame, app: &App, area: Rect) {
    let (cols, rows, empty): (Vec<Column>, Vec<Vec<String>>, &str) = match app.tab {
        Tab::Vms => (
            vec![
                col("NAME", 10, 0),
                col("STATE", 10, 0),
                col("IP", 12, 1),
                col("IMAGE", 12, 7),
                col("VCPU", 4, 5),
                col("MEM", 5, 6),
                col("CPU%", 4, 3),
                col("RSS", 7, 4),
                col("UP", 5, 2),
            ],
            app.vms
                .iter()
                .map(|r| {
                    vec![
                        r.vm.name.to_string(),
                        state_label(&r.vm),
                        r.vm.ip.clone().unwrap_or_default(),
                        r.vm.image.clone(),
                        r.vm.vcpu.to_string(),
                        format!("{}M", r.vm.memory_mib),
                        r.cpu_percent.map(|p| format!("{p:.0}")).unwrap_or_default(),
                        r.rss_bytes.map(short_bytes).unwrap_or_default(),
                        r.uptime_secs.map(duration).unwrap_or_default(),
                    ]
                })
                .collect(),
            "no VMs: press c to create one",
        ),
        Tab::Images => (
            vec![
                col("NAME", 22, 0),
                col("KERNEL", 14, 2),
                col("STATE", 9, 0),
                col("SOURCE", 20, 4),
                col("TEMPLATES", 9, 3),
                col("CREATED", 8, 1),
            ],
            app.images
                .iter()
                .map(|i| {
                    let (n, bytes) = super::app::templates_of(&app.templates, &i.name);
                    vec![
                        i.name.clone(),
                        i.kernel.clone(),
                        i.state.as_str().to_string(),
                        i.source.clone(),
                        if n == 0 {
                            "-".into()
                        } else {
                            format!("{n} {}", short_bytes(bytes))
                        },
                        crate::output::age(i.created_at),
                    ]
                })
                .collect(),
            "no images: press b to build the default one, p to pull",
        ),
        Tab::Kernels => (
            vec![
                col("NAME", 18, 0),
                col("VERSION", 22, 1),
                col("STATE", 9, 0),
                col("SOURCE", 16, 3),
                col("CREATED", 8, 2),
            ],
            app.kernels
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.version.clone(),
                        k.state.as_str().to_string(),
                        k.source.clone(),
                        crate::output::age(k.created_at),
                    ]
                })
                .collect(),
            "no kernels: building or pulling an image brings its kernel",
        ),
    };
    let block = Block::new().borders(Borders::TOP | Borders::BOTTOM);
    if rows.is_empty() {
        f.render_widget(Paragraph::new(empty).block(block), area);
        return;
    }
    let keep = fitting(&cols, area.width);
    let header = Row::new(keep.iter().map(|&i| Cell::from(cols[i].header)))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let body = rows.into_iter().map(|row| {
        let style = match row.get(1).map(String::as_str) {
            Some("running") => Style::new().fg(Color::Green),
            Some("error") => Style::new().fg(Color::Red),
            _ => Style::new(),
        };
        Row::new(keep.iter().map(|&i| Cell::from(row[i].clone()))).style(style)
    });
    let mut widths: Vec<Constraint> = keep
        .iter()
        .map(|&i| Constraint::Length(cols[i].width))
        .collect();
    // The first column takes what is left.
    widths[0] = Constraint::Min(cols[keep[0]].width);
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(app.selected()));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_logs(f: &mut Frame, app: &App, area: Rect) {
    let Some(logs) = &app.logs else { return };
    let mut title = format!(" console of {} ", logs.vm);
    if logs.buffer.dropped > 0 {
        title.push_str(&format!("({} earlier lines dropped) ", logs.buffer.dropped));
    }
    if logs.scroll > 0 {
        title.push_str(&format!("[{} lines up, End follows] ", logs.scroll));
    }
    if let Some(why) = &logs.ended {
        title.push_str(&format!("[{why}] "));
    }
    let border = if app.logs_focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    let block = Block::bordered().title(title).border_style(border);
    let inner = block.inner(area);
    let lines: Vec<Line> = logs
        .buffer
        .window(inner.height as usize, logs.scroll)
        .into_iter()
        .map(|l| Line::raw(l.to_string()))
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_progress(f: &mut Frame, app: &App, area: Rect) {
    for (i, op) in app.operations.iter().take(3).enumerate() {
        let row = Rect {
            y: area.y + i as u16,
            height: 1,
            ..area
        };
        let label = if op.phase.is_empty() {
            op.title.clone()
        } else {
            format!("{}: {}", op.title, op.phase)
        };
        let ratio = op.ratio();
        let label = match (ratio, op.total) {
            (Some(_), Some(total)) => format!("{label} {}/{total}", op.done),
            _ => format!("{label} …"),
        };
        f.render_widget(
            Gauge::default()
                .gauge_style(Style::new().fg(Color::Cyan))
                .ratio(ratio.unwrap_or(0.0))
                .label(label),
            row,
        );
    }
}

fn draw_message(f: &mut Frame, app: &App, area: Rect) {
    let Some((text, error)) = &app.message else {
        return;
    };
    let style = if *error {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    f.render_widget(Paragraph::new(text.as_str()).style(style), area);
}

fn key_help(app: &App) -> String {
    if let Some(modal) = &app.modal {
        return match modal {
            Modal::Confirm { .. } => " y confirm  any other key cancels".into(),
            Modal::Form { .. } => " Enter submit  Tab next field  Esc cancel".into(),
        };
    }
    let mut keys = String::from(" q quit ");
    if app.logs_focused {
        keys.push_str(" ↑↓ PgUp PgDn scroll  End follow  f table  Esc close logs");
        return keys;
    }
    keys.push_str(match app.tab {
        Tab::Vms => " ⏎ ssh  s start  x stop  r restart  d delete  l logs  c create",
        Tab::Images => " b build default  p pull  d delete",
        Tab::Kernels => " d delete",
    });
    if app.logs.is_some() {
        keys.push_str("  f logs");
    }
    keys.push_str("  Tab view");
    keys
}

fn draw_modal(f: &mut Frame, modal: &Modal) {
    let area = f.area();
    match modal {
        Modal::Confirm { prompt, .. } => {
            let width = area.width.min(70);
            let rect = centered(area, width, 4);
            f.render_widget(Clear, rect);
            f.render_widget(
                Paragraph::new(prompt.as_str())
                    .wrap(ratatui::widgets::Wrap { trim: true })
                    .block(Block::bordered().title(" confirm ")),
                rect,
            );
        }
        Modal::Form {
            kind,
            fields,
            focus,
            error,
        } => {
            let title = match kind {
                FormKind::Create => " create a VM ",
                FormKind::Pull => " pull an image ",
            };
            let height = fields.len() as u16 + 3;
            let rect = centered(area, area.width.min(70), height);
            let mut lines: Vec<Line> = fields
                .iter()
                .enumerate()
                .map(|(i, field)| {
                    let style = if i == *focus {
                        Style::new().add_modifier(Modifier::REVERSED)
                    } else {
                        Style::new()
                    };
                    Line::from(vec![
                        Span::raw(format!("{:>11}: ", field.label)),
                        Span::styled(format!("{:<20}", field.value), style),
                        Span::styled(
                            format!(" {}", field.hint),
                            Style::new().add_modifier(Modifier::DIM),
                        ),
                    ])
                })
                .collect();
            lines.push(match error {
                Some(e) => Line::styled(e.clone(), Style::new().fg(Color::Red)),
                None => Line::raw(""),
            });
            f.render_widget(Clear, rect);
            f.render_widget(
                Paragraph::new(lines).block(Block::bordered().title(title)),
                rect,
            );
        }
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// `512M`, `1.5G`: to fit a narrow column.
fn short_bytes(n: u64) -> String {
    human_bytes(n)
        .replace(" KiB", "K")
        .replace(" MiB", "M")
        .replace(" GiB", "G")
        .replace(" TiB", "T")
}

/// `45s`, `12m`, `3h05`, `2d4h`.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{:02}", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..height {
            for x in 0..width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn columns_go_by_priority() {
        let cols = [col("A", 10, 0), col("B", 10, 2), col("C", 10, 1)];
        assert_eq!(fitting(&cols, 80), [0, 1, 2]);
        assert_eq!(fitting(&cols, 25), [0, 2]);
        assert_eq!(fitting(&cols, 5), [0]);
    }

    #[test]
    fn the_vm_table_fits_80_columns_and_degrades() {
        let mut app = App::new();
        let mut vm = super::super::app::tests::vm("web-1", banger_model::VmState::Running);
        vm.memory_mib = 2048;
        vm.ip = Some("172.16.0.23".into());
        app.apply_snapshot(
            super::super::app::Snapshot {
                vms: vec![vm],
                ..Default::default()
            },
            std::time::Instant::now(),
        );
        let s = screen(&app, 80, 24);
        for want in [
            "web-1",
            "running",
            "172.16.0.23",
            "debian-bookw",
            "CPU%",
            "UP",
        ] {
            assert!(s.contains(want), "{want} at 80x24:\n{s}");
        }
        let s = screen(&app, 40, 12);
        assert!(s.contains("web-1") && s.contains("running"), "{s}");
        assert!(!s.contains("IMAGE"), "{s}");
        // Nothing panics however small.
        screen(&app, 10, 3);
        screen(&app, 1, 1);
    }

    #[test]
    fn durations_and_sizes_are_short() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h05");
        assert_eq!(duration(2 * 86400 + 4 * 3600), "2d4h");
        assert_eq!(short_bytes(1536 << 20), "1.5G");
    }
}
