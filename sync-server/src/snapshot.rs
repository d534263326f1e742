//! A list frozen for a vendor: what is still needed (and what is in a
//! cart already), grouped by category, with the family's name and a
//! version named after the log sequence it was taken at ("v42"). Rendered
//! as a WhatsApp text message, as one line for a template parameter, and
//! (in `http::share_page`) as a page.

use chrono::{DateTime, Utc};
use larder_crdt::ItemStatus;
use larder_crdt::list::ListSnapshot;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest WhatsApp text message body, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// The frozen list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub family: String,
    pub list_name: String,
    /// `v` and the sequence, e.g. `v42`.
    pub version: String,
    pub seq: i64,
    pub taken_at: DateTime<Utc>,
    /// Items in the snapshot (needed and in a cart).
    pub item_count: usize,
    /// What the family added for the vendor.
    pub note: Option<String>,
    /// Named categories by name, then items with none.
    pub categories: Vec<SnapshotCategory>,
}

/// Items of one category, in list order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotCategory {
    /// `None` for items without a category.
    pub name: Option<String>,
    pub items: Vec<SnapshotItem>,
}

/// An item as the vendor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotItem {
    pub name: String,
    pub quantity: Option<String>,
    /// `needed` or `in_cart`.
    pub status: String,
    pub note: Option<String>,
}

impl Snapshot {
    /// Freezes `list` as read at `seq`. Purchased items are left out.
    pub fn freeze(
        list: &ListSnapshot,
        family: &str,
        list_name: &str,
        seq: i64,
        note: Option<String>,
    ) -> Snapshot {
        let mut categories: Vec<SnapshotCategory> = Vec::new();
        let mut item_count = 0;
        for item in &list.items {
            if !matches!(item.status, ItemStatus::Needed | ItemStatus::InCart) {
                continue;
            }
            item_count += 1;
            let category = item
                .category
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            let entry = SnapshotItem {
                name: item.name.clone(),
                quantity: item.quantity.clone().filter(|q| !q.trim().is_empty()),
                status: item.status.as_str().to_owned(),
                note: item.note.clone().filter(|n| !n.trim().is_empty()),
            };
            match categories.iter_mut().find(|c| c.name == category) {
                Some(c) => c.items.push(entry),
                None => categories.push(SnapshotCategory {
                    name: category,
                    items: vec![entry],
                }),
            }
        }
        categories.sort_by(|a, b| match (&a.name, &b.name) {
            (Some(a), Some(b)) => a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        Snapshot {
            family: family.to_owned(),
            list_name: list_name.to_owned(),
            version: format!("v{seq}"),
            seq,
            taken_at: Utc::now(),
            item_count,
            note,
            categories,
        }
    }

    /// The WhatsApp text message: a heading with the version (so a rare
    /// duplicate send is recognisable), the items by category, the note
    /// and the vendor's link; items that do not fit in [`MAX_TEXT_CHARS`]
    /// are counted instead.
    pub fn render_text(&self, link: Option<&str>) -> String {
        let mut head = format!(
            "🛒 {} from {} ({})\n",
            short(&self.list_name, MAX_HEAD_PART),
            short(&self.family, MAX_HEAD_PART),
            self.version
        );
        if let Some(note) = &self.note {
            head.push_str(&format!("Note: {}\n", short(note, MAX_NOTE)));
        }
        let mut tail = format!("\n{} {}", self.item_count, plural(self.item_count));
        if let Some(link) = link {
            tail.push_str(&format!(" · {}", short(link, MAX_HEAD_PART)));
        }
        let budget = MAX_TEXT_CHARS.saturating_sub(chars(&head) + chars(&tail) + 40);
        let mut body = String::new();
        let mut shown = 0;
        'outer: for category in &self.categories {
            let heading = format!(
                "\n*{}*\n",
                category
                    .name
                    .as_deref()
                    .map_or("Other".into(), |n| short(n, MAX_HEAD_PART))
            );
            if chars(&body) + chars(&heading) > budget {
                break;
            }
            body.push_str(&heading);
            for item in &category.items {
                let line = format!("• {}\n", item_line(item));
                if chars(&body) + chars(&line) > budget {
                    break 'outer;
                }
                body.push_str(&line);
                shown += 1;
            }
        }
        if self.item_count == 0 {
            body.push_str("\nNothing is needed right now.\n");
        } else if shown < self.item_count {
            let more = self.item_count - shown;
            body.push_str(&format!("…and {more} more {}\n", plural(more)));
        }
        format!("{head}{body}{tail}")
    }

    /// The items on one line (template parameters may not hold newlines,
    /// tabs or runs of spaces), at most `max_chars` characters.
    pub fn render_line(&self, max_chars: usize) -> String {
        let mut out = String::new();
        let mut shown = 0;
        'outer: for category in &self.categories {
            let mut part = match &category.name {
                Some(name) => format!("{}: ", short(name, MAX_HEAD_PART)),
                None => String::new(),
            };
            let mut first = true;
            for item in &category.items {
                let piece = format!("{}{}", if first { "" } else { ", " }, item_line(item));
                let separator = if out.is_empty() { "" } else { "; " };
                let reserve = 24;
                if chars(&out) + chars(separator) + chars(&part) + chars(&piece) + reserve
                    > max_chars
                {
                    if !first {
                        out.push_str(separator);
                        out.push_str(&part);
                    }
                    break 'outer;
                }
                part.push_str(&piece);
                first = false;
                shown += 1;
            }
            if !first {
                if !out.is_empty() {
                    out.push_str("; ");
                }
                out.push_str(&part);
            }
        }
        if shown < self.item_count {
            out.push_str(&format!(" … +{} more", self.item_count - shown));
        }
        if out.is_empty() {
            out.push_str("nothing needed");
        }
        out
    }
}

/// An item on one line; a document written by hand may hold names of
/// any length, so each part is cut.
fn item_line(item: &SnapshotItem) -> String {
    let mut line = short(&item.name, MAX_HEAD_PART);
    if let Some(q) = &item.quantity {
        line.push_str(&format!(" × {}", short(q, MAX_HEAD_PART)));
    }
    if let Some(note) = &item.note {
        line.push_str(&format!(" ({})", short(note, MAX_HEAD_PART)));
    }
    if item.status == ItemStatus::InCart.as_str() {
        line.push_str(" [in cart]");
    }
    line
}

/// Longest list name, family name or link in a message's heading.
const MAX_HEAD_PART: usize = 200;
/// Longest note in a message.
const MAX_NOTE: usize = 500;

/// Text with every run of whitespace (newlines, tabs) made one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// [`one_line`], cut to `max` characters (with `…` when cut).
pub fn short(text: &str, max: usize) -> String {
    let line = one_line(text);
    if chars(&line) <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "item" } else { "items" }
}

#[cfg(test)]
mod tests {
    use larder_crdt::list::{ItemRow, ListMeta, SkipCounts};

    use super::*;

    fn item(name: &str, status: ItemStatus, category: Option<&str>, qty: Option<&str>) -> ItemRow {
        ItemRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            quantity: qty.map(Into::into),
            status,
            category: category.map(Into::into),
            note: None,
            assignee: None,
            position: None,
            added_by: None,
            added_at_ms: None,
        }
    }

    fn list(items: Vec<ItemRow>) -> ListSnapshot {
        ListSnapshot {
            meta: ListMeta {
                name: Some("Weekly".into()),
                description: None,
                status: None,
            },
            items,
            orders: Vec::new(),
            skipped: SkipCounts::default(),
        }
    }

    #[test]
    fn purchased_items_are_left_out_and_categories_sorted() {
        let doc = list(vec![
            item("Milk", ItemStatus::Needed, Some("Dairy"), Some("2 l")),
            item("Bread", ItemStatus::Purchased, Some("Bakery"), None),
            item("Tea", ItemStatus::Needed, None, None),
            item("Apples", ItemStatus::InCart, Some("Fruit"), Some("6")),
            item("Butter", ItemStatus::Needed, Some("Dairy"), None),
        ]);
        let s = Snapshot::freeze(&doc, "Smiths", "Weekly", 42, None);
        assert_eq!(s.version, "v42");
        assert_eq!(s.item_count, 4);
        let names: Vec<_> = s.categories.iter().map(|c| c.name.clone()).collect();
        assert_eq!(
            names,
            vec![Some("Dairy".into()), Some("Fruit".into()), None],
            "named categories first, by name; no Bakery (all purchased)"
        );
        let text = s.render_text(None);
        assert!(text.starts_with("🛒 Weekly from Smiths (v42)\n"), "{text}");
        assert!(text.contains("*Dairy*\n• Milk × 2 l\n• Butter\n"), "{text}");
        assert!(text.contains("• Apples × 6 [in cart]"), "{text}");
        assert!(text.contains("*Other*\n• Tea\n"), "{text}");
        assert!(!text.contains("Bread"));
        assert_eq!(
            s.render_line(700),
            "Dairy: Milk × 2 l, Butter; Fruit: Apples × 6 [in cart]; Tea"
        );
    }

    #[test]
    fn long_lists_fit_the_limits_and_say_how_many_are_left_out() {
        let items = (0..2000)
            .map(|i| {
                item(
                    &format!("Item {i}\nwith\ttabs"),
                    ItemStatus::Needed,
                    None,
                    None,
                )
            })
            .collect();
        let s = Snapshot::freeze(&list(items), "Smiths", "Weekly", 7, Some("by 5pm".into()));
        let text = s.render_text(Some("https://larder.example/s/abc"));
        assert!(text.chars().count() <= MAX_TEXT_CHARS, "{}", text.len());
        assert!(text.contains("more items"), "{text}");
        assert!(text.ends_with("2000 items · https://larder.example/s/abc"));
        let line = s.render_line(700);
        assert!(line.chars().count() <= 700, "{}", line.chars().count());
        assert!(!line.contains('\n') && !line.contains('\t') && !line.contains("    "));
        assert!(line.contains("more"), "{line}");
    }

    #[test]
    fn odd_characters_reach_the_text_as_typed_on_one_line_each() {
        let mut bread = item("לחם\nטרי", ItemStatus::Needed, Some("מאפייה"), None);
        bread.note = Some("فريش\tجدا".into());
        let doc = list(vec![
            item(
                "<script>alert(1)</script>",
                ItemStatus::Needed,
                Some("Dairy 🥛"),
                None,
            ),
            item(
                "🍎 Apples",
                ItemStatus::InCart,
                Some("Dairy 🥛"),
                Some("6 🍏"),
            ),
            bread,
        ]);
        let s = Snapshot::freeze(&doc, "O'Brien & <Sons>", "Weekly", 5, None);
        let text = s.render_text(None);
        assert!(
            text.starts_with("🛒 Weekly from O'Brien & <Sons> (v5)"),
            "{text}"
        );
        assert!(
            text.contains(
                "*Dairy 🥛*\n• <script>alert(1)</script>\n• 🍎 Apples × 6 🍏 [in cart]\n"
            ),
            "{text}"
        );
        assert!(text.contains("*מאפייה*\n• לחם טרי (فريش جدا)\n"), "{text}");
        assert_eq!(
            s.render_line(700),
            "Dairy 🥛: <script>alert(1)</script>, 🍎 Apples × 6 🍏 [in cart]; מאפייה: לחם טרי (فريش جدا)"
        );
    }

    #[test]
    fn huge_names_are_cut_and_the_text_stays_within_the_limit() {
        let doc = list(vec![
            item(&"n".repeat(10_000), ItemStatus::Needed, None, None),
            item("Tea", ItemStatus::Needed, None, None),
        ]);
        let name = "L".repeat(10_000);
        let s = Snapshot::freeze(&doc, &"F".repeat(10_000), &name, 3, Some("x".repeat(9_000)));
        let text = s.render_text(Some("https://larder.example/s/abc"));
        assert!(
            text.chars().count() <= MAX_TEXT_CHARS,
            "{}",
            text.chars().count()
        );
        assert!(
            text.contains("• Tea"),
            "the items that fit are there: {text}"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        let s = Snapshot::freeze(&list(Vec::new()), "Smiths", "Weekly", 1, None);
        assert!(s.render_text(None).contains("Nothing is needed right now."));
        assert_eq!(s.render_line(100), "nothing needed");
    }
}
