//! [`ListDoc`]: typed reads and writes of one grocery list document.
//!
//! Writes go through a `TransactionMut` the caller owns, so several edits
//! can form one update. Reads turn the merged state into plain rows
//! ([`ListSnapshot`]); anything a foreign client wrote that does not fit the
//! schema is skipped and counted in [`SkipCounts`], never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use yrs::{Any, Array, ArrayPrelim, Doc, In, Map, MapPrelim, MapRef, Out, ReadTxn, TransactionMut};

use crate::CrdtError;
use crate::schema::{self, ItemStatus, ListStatus, OrderStatus, field};

/// Handles to the three root maps of a list document.
#[derive(Clone)]
pub struct ListDoc {
    meta: MapRef,
    items: MapRef,
    orders: MapRef,
}

/// `meta` of a list as read from the document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListMeta {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<ListStatus>,
}

/// One item as read from the document (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRow {
    pub id: String,
    pub name: String,
    pub quantity: Option<String>,
    pub status: ItemStatus,
    pub category: Option<String>,
    pub note: Option<String>,
    pub assignee: Option<String>,
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at_ms: Option<i64>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItemRow {
    pub item_id: Option<String>,
    pub name: String,
    pub quantity: Option<String>,
}

/// One order as read from the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: String,
    pub vendor_id: Option<String>,
    pub status: OrderStatus,
    pub items: Vec<OrderItemRow>,
    pub placed_by: Option<String>,
    pub placed_at_ms: Option<i64>,
    pub note: Option<String>,
    /// The share (snapshot sent to the vendor) the order answers.
    pub share_id: Option<String>,
}

/// How much of the document did not fit the schema and was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Items left out entirely (not a map, bad id, no name, unknown status).
    pub items: u32,
    /// Orders left out entirely.
    pub orders: u32,
    /// Optional fields or order lines of kept rows that had the wrong type.
    pub fields: u32,
}

impl SkipCounts {
    /// Whether anything was skipped.
    pub fn is_clean(&self) -> bool {
        *self == SkipCounts::default()
    }
}

/// The merged state of a list as plain rows; items are sorted by
/// `(position, id)` and orders by `(placed_at, id)`, so equal documents give
/// equal snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListSnapshot {
    pub meta: ListMeta,
    pub items: Vec<ItemRow>,
    pub orders: Vec<OrderRow>,
    pub skipped: SkipCounts,
}

/// A new item. `id` must be a UUID string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub id: String,
    pub name: String,
    pub quantity: Option<String>,
    pub category: Option<String>,
    pub note: Option<String>,
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at_ms: i64,
}

/// A change to some fields of an item. `None` leaves a field as it is;
/// `Some(None)` on an optional field removes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemPatch {
    pub name: Option<String>,
    pub quantity: Option<Option<String>>,
    pub status: Option<ItemStatus>,
    pub category: Option<Option<String>>,
    pub note: Option<Option<String>>,
    pub assignee: Option<Option<String>>,
    pub position: Option<String>,
}

/// A new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub id: String,
    pub vendor_id: String,
    pub items: Vec<OrderItemRow>,
    pub placed_by: Option<String>,
    pub placed_at_ms: i64,
    pub note: Option<String>,
    /// The share the order answers, when it answers one.
    pub share_id: Option<String>,
}

/// Longest accepted item or list name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

impl ListDoc {
    /// Binds to the root maps of `doc` (creating them lazily, as Yjs does).
    pub fn new(doc: &Doc) -> Self {
        ListDoc {
            meta: doc.get_or_insert_map(schema::META),
            items: doc.get_or_insert_map(schema::ITEMS),
            orders: doc.get_or_insert_map(schema::ORDERS),
        }
    }

    /// Sets the list's name.
    pub fn set_name(&self, txn: &mut TransactionMut, name: &str) -> Result<(), CrdtError> {
        check_name(field::NAME, name)?;
        self.meta.insert(txn, field::NAME, name);
        Ok(())
    }

    /// Sets or clears the list's description.
    pub fn set_description(&self, txn: &mut TransactionMut, description: Option<&str>) {
        set_optional(&self.meta, txn, field::DESCRIPTION, description);
    }

    /// Sets the list's status.
    pub fn set_status(&self, txn: &mut TransactionMut, status: ListStatus) {
        self.meta.insert(txn, field::STATUS, status.as_str());
    }

    /// Adds an item with status `needed`.
    pub fn add_item(&self, txn: &mut TransactionMut, item: &NewItem) -> Result<(), CrdtError> {
        check_id("item id", &item.id)?;
        check_name(field::NAME, &item.name)?;
        let mut fields: Vec<(&str, In)> = vec![
            (field::NAME, In::Any(Any::from(item.name.as_str()))),
            (
                field::STATUS,
                In::Any(Any::from(ItemStatus::Needed.as_str())),
            ),
            // JavaScript numbers are doubles; writing one keeps JS readers happy.
            (field::ADDED_AT, In::Any(Any::from(item.added_at_ms as f64))),
        ];
        let optional = [
            (field::QUANTITY, &item.quantity),
            (field::CATEGORY, &item.category),
            (field::NOTE, &item.note),
            (field::POSITION, &item.position),
            (field::ADDED_BY, &item.added_by),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                fields.push((key, In::Any(Any::from(value.as_str()))));
            }
        }
        let prelim: MapPrelim = fields.into_iter().collect();
        self.items.insert(txn, item.id.as_str(), prelim);
        Ok(())
    }

    /// Changes fields of an existing item; each field merges on its own
    /// (last writer wins per field).
    pub fn update_item(
        &self,
        txn: &mut TransactionMut,
        id: &str,
        patch: &ItemPatch,
    ) -> Result<(), CrdtError> {
        let item = match self.items.get(txn, id) {
            Some(Out::YMap(map)) => map,
            _ => {
                return Err(CrdtError::NotFound {
                    kind: "item",
                    id: id.to_owned(),
                });
            }
        };
        if let Some(name) = &patch.name {
            check_name(field::NAME, name)?;
            item.insert(txn, field::NAME, name.as_str());
        }
        if let Some(status) = patch.status {
            item.insert(txn, field::STATUS, status.as_str());
        }
        if let Some(position) = &patch.position {
            item.insert(txn, field::POSITION, position.as_str());
        }
        let optional = [
            (field::QUANTITY, &patch.quantity),
            (field::CATEGORY, &patch.category),
            (field::NOTE, &patch.note),
            (field::ASSIGNEE, &patch.assignee),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                set_optional(&item, txn, key, value.as_deref());
            }
        }
        Ok(())
    }

    /// Removes an item; false when it did not exist.
    pub fn remove_item(&self, txn: &mut TransactionMut, id: &str) -> bool {
        self.items.remove(txn, id).is_some()
    }

    /// Places an order.
    pub fn add_order(&self, txn: &mut TransactionMut, order: &NewOrder) -> Result<(), CrdtError> {
        check_id("order id", &order.id)?;
        let lines: Vec<In> = order
            .items
            .iter()
            .map(|line| {
                let mut fields: Vec<(&str, In)> =
                    vec![(field::NAME, In::Any(Any::from(line.name.as_str())))];
                if let Some(item_id) = &line.item_id {
                    fields.push((field::ITEM_ID, In::Any(Any::from(item_id.as_str()))));
                }
                if let Some(quantity) = &line.quantity {
                    fields.push((field::QUANTITY, In::Any(Any::from(quantity.as_str()))));
                }
                In::Map(fields.into_iter().collect())
            })
            .collect();
        let mut fields: Vec<(&str, In)> = vec![
            (
                field::VENDOR_ID,
                In::Any(Any::from(order.vendor_id.as_str())),
            ),
            (
                field::STATUS,
                In::Any(Any::from(OrderStatus::Placed.as_str())),
            ),
            (field::ITEMS, In::Array(ArrayPrelim::from(lines))),
            (
                field::PLACED_AT,
                In::Any(Any::from(order.placed_at_ms as f64)),
            ),
        ];
        if let Some(by) = &order.placed_by {
            fields.push((field::PLACED_BY, In::Any(Any::from(by.as_str()))));
        }
        if let Some(note) = &order.note {
            fields.push((field::NOTE, In::Any(Any::from(note.as_str()))));
        }
        if let Some(share) = &order.share_id {
            check_id("share id", share)?;
            fields.push((field::SHARE_ID, In::Any(Any::from(share.as_str()))));
        }
        let prelim: MapPrelim = fields.into_iter().collect();
        self.orders.insert(txn, order.id.as_str(), prelim);
        Ok(())
    }

    /// Sets an order's status. Which transitions are allowed is the API's
    /// business; the document records what it is told.
    pub fn set_order_status(
        &self,
        txn: &mut TransactionMut,
        id: &str,
        status: OrderStatus,
    ) -> Result<(), CrdtError> {
        match self.orders.get(txn, id) {
            Some(Out::YMap(order)) => {
                order.insert(txn, field::STATUS, status.as_str());
                Ok(())
            }
            _ => Err(CrdtError::NotFound {
                kind: "order",
                id: id.to_owned(),
            }),
        }
    }

    /// Reads the merged state into rows, skipping what does not fit.
    pub fn read<T: ReadTxn>(&self, txn: &T) -> ListSnapshot {
        let mut skipped = SkipCounts::default();
        let meta = ListMeta {
            name: self.meta_string(txn, field::NAME, &mut skipped),
            description: self.meta_string(txn, field::DESCRIPTION, &mut skipped),
            status: match self.meta_string(txn, field::STATUS, &mut skipped) {
                None => None,
                Some(text) => {
                    let status = ListStatus::parse(&text);
                    if status.is_none() {
                        skipped.fields += 1;
                    }
                    status
                }
            },
        };
        let mut items: Vec<ItemRow> = self
            .items
            .iter(txn)
            .filter_map(|(id, value)| {
                let row = read_item(txn, id, value, &mut skipped);
                if row.is_none() {
                    skipped.items += 1;
                }
                row
            })
            .collect();
        items.sort_by(|a, b| (&a.position, &a.id).cmp(&(&b.position, &b.id)));
        let mut orders: Vec<OrderRow> = self
            .orders
            .iter(txn)
            .filter_map(|(id, value)| {
                let row = read_order(txn, id, value, &mut skipped);
                if row.is_none() {
                    skipped.orders += 1;
                }
                row
            })
            .collect();
        orders.sort_by(|a, b| (a.placed_at_ms, &a.id).cmp(&(b.placed_at_ms, &b.id)));
        ListSnapshot {
            meta,
            items,
            orders,
            skipped,
        }
    }

    /// Reads one item, if present and valid.
    pub fn item<T: ReadTxn>(&self, txn: &T, id: &str) -> Option<ItemRow> {
        let value = self.items.get(txn, id)?;
        read_item(txn, id, value, &mut SkipCounts::default())
    }

    fn meta_string<T: ReadTxn>(
        &self,
        txn: &T,
        key: &str,
        skipped: &mut SkipCounts,
    ) -> Option<String> {
        let value = self.meta.get(txn, key);
        optional_string(value, skipped)
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), CrdtError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(CrdtError::Invalid {
            field,
            reason: format!("must be 1 to {MAX_NAME_CHARS} characters and not blank"),
        });
    }
    Ok(())
}

fn check_id(field: &'static str, id: &str) -> Result<(), CrdtError> {
    if schema::is_uuid(id) {
        Ok(())
    } else {
        Err(CrdtError::Invalid {
            field,
            reason: "must be a UUID".to_owned(),
        })
    }
}

fn set_optional(map: &MapRef, txn: &mut TransactionMut, key: &str, value: Option<&str>) {
    match value {
        Some(value) => {
            map.insert(txn, key, value);
        }
        None => {
            map.remove(txn, key);
        }
    }
}

/// An optional string field: absent and `null` read as `None`; any other
/// non-string value is counted and read as `None`.
fn optional_string(value: Option<Out>, skipped: &mut SkipCounts) -> Option<String> {
    match value {
        None | Some(Out::Any(Any::Null | Any::Undefined)) => None,
        Some(Out::Any(Any::String(s))) => Some(s.to_string()),
        Some(_) => {
            skipped.fields += 1;
            None
        }
    }
}

/// An optional millisecond timestamp: JavaScript writes doubles.
fn optional_millis(value: Option<Out>, skipped: &mut SkipCounts) -> Option<i64> {
    match value {
        None | Some(Out::Any(Any::Null | Any::Undefined)) => None,
        Some(Out::Any(Any::Number(n))) => match n {
            yrs::Number::Int(i) => Some(i),
            yrs::Number::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(f as i64)
            }
            yrs::Number::Float(_) => {
                skipped.fields += 1;
                None
            }
        },
        Some(_) => {
            skipped.fields += 1;
            None
        }
    }
}

/// Reads the fields of a nested map or a plain JSON object alike.
enum Fields<'a, T: ReadTxn> {
    Shared(MapRef, &'a T),
    Plain(Arc<HashMap<String, Any>>),
}

impl<T: ReadTxn> Fields<'_, T> {
    fn get(&self, key: &str) -> Option<Out> {
        match self {
            Fields::Shared(map, txn) => map.get(*txn, key),
            Fields::Plain(map) => map.get(key).cloned().map(Out::Any),
        }
    }

    fn string(&self, key: &str, skipped: &mut SkipCounts) -> Option<String> {
        optional_string(self.get(key), skipped)
    }

    /// A required string: missing or of the wrong type rejects the row.
    fn required_string(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Out::Any(Any::String(s))) if !s.trim().is_empty() => Some(s.to_string()),
            _ => None,
        }
    }
}

fn fields_of<T: ReadTxn>(txn: &T, value: Out) -> Option<Fields<'_, T>> {
    match value {
        Out::YMap(map) => Some(Fields::Shared(map, txn)),
        Out::Any(Any::Map(map)) => Some(Fields::Plain(map)),
        _ => None,
    }
}

fn read_item<T: ReadTxn>(
    txn: &T,
    id: &str,
    value: Out,
    skipped: &mut SkipCounts,
) -> Option<ItemRow> {
    if !schema::is_uuid(id) {
        return None;
    }
    let fields = fields_of(txn, value)?;
    let name = fields.required_string(field::NAME)?;
    let status = match fields.get(field::STATUS) {
        None => ItemStatus::Needed,
        Some(Out::Any(Any::String(s))) => ItemStatus::parse(&s)?,
        Some(_) => return None,
    };
    Some(ItemRow {
        id: id.to_owned(),
        name,
        quantity: fields.string(field::QUANTITY, skipped),
        status,
        category: fields.string(field::CATEGORY, skipped),
        note: fields.string(field::NOTE, skipped),
        assignee: fields.string(field::ASSIGNEE, skipped),
        position: fields.string(field::POSITION, skipped),
        added_by: fields.string(field::ADDED_BY, skipped),
        added_at_ms: optional_millis(fields.get(field::ADDED_AT), skipped),
    })
}

fn read_order<T: ReadTxn>(
    txn: &T,
    id: &str,
    value: Out,
    skipped: &mut SkipCounts,
) -> Option<OrderRow> {
    let fields = fields_of(txn, value)?;
    let status = match fields.get(field::STATUS) {
        Some(Out::Any(Any::String(s))) => OrderStatus::parse(&s)?,
        _ => return None,
    };
    let mut lines = Vec::new();
    let mut read_line = |value: Out, skipped: &mut SkipCounts| match fields_of(txn, value) {
        Some(line) => match line.required_string(field::NAME) {
            Some(name) => lines.push(OrderItemRow {
                item_id: line.string(field::ITEM_ID, skipped),
                name,
                quantity: line.string(field::QUANTITY, skipped),
            }),
            None => skipped.fields += 1,
        },
        None => skipped.fields += 1,
    };
    match fields.get(field::ITEMS) {
        None => {}
        Some(Out::YArray(array)) => {
            for value in array.iter(txn) {
                read_line(value, skipped);
            }
        }
        Some(Out::Any(Any::Array(values))) => {
            for value in values.iter() {
                read_line(Out::Any(value.clone()), skipped);
            }
        }
        Some(_) => skipped.fields += 1,
    }
    Some(OrderRow {
        id: id.to_owned(),
        vendor_id: fields.string(field::VENDOR_ID, skipped),
        status,
        items: lines,
        placed_by: fields.string(field::PLACED_BY, skipped),
        placed_at_ms: optional_millis(fields.get(field::PLACED_AT), skipped),
        note: fields.string(field::NOTE, skipped),
        share_id: fields.string(field::SHARE_ID, skipped),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::Transact;

    const ITEM: &str = "0191d6b2-7c1e-7a3b-9f00-123456789abc";

    fn milk() -> NewItem {
        NewItem {
            id: ITEM.to_owned(),
            name: "Milk".into(),
            quantity: Some("2 l".into()),
            category: Some("dairy".into()),
            note: None,
            position: Some("V".into()),
            added_by: Some("user-1".into()),
            added_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_added_item_reads_back_with_every_field() {
        let doc = Doc::with_client_id(1);
        let list = ListDoc::new(&doc);
        let mut txn = doc.transact_mut();
        list.set_name(&mut txn, "Weekly").expect("valid");
        list.add_item(&mut txn, &milk()).expect("valid");
        let patch = ItemPatch {
            status: Some(ItemStatus::InCart),
            assignee: Some(Some("user-2".into())),
            ..Default::default()
        };
        list.update_item(&mut txn, ITEM, &patch).expect("exists");
        let snapshot = list.read(&txn);
        assert_eq!(snapshot.meta.name.as_deref(), Some("Weekly"));
        assert_eq!(snapshot.items.len(), 1);
        let item = &snapshot.items[0];
        assert_eq!(item.name, "Milk");
        assert_eq!(item.status, ItemStatus::InCart);
        assert_eq!(item.assignee.as_deref(), Some("user-2"));
        assert_eq!(item.added_at_ms, Some(1_700_000_000_000));
        assert!(snapshot.skipped.is_clean());
    }

    #[test]
    fn bad_writes_are_refused() {
        let doc = Doc::new();
        let list = ListDoc::new(&doc);
        let mut txn = doc.transact_mut();
        let mut item = milk();
        item.id = "not-a-uuid".into();
        assert!(list.add_item(&mut txn, &item).is_err());
        item = milk();
        item.name = "   ".into();
        assert!(list.add_item(&mut txn, &item).is_err());
        assert!(matches!(
            list.update_item(&mut txn, ITEM, &ItemPatch::default()),
            Err(CrdtError::NotFound { .. })
        ));
    }

    #[test]
    fn garbage_from_foreign_clients_is_skipped_and_counted() {
        let doc = Doc::new();
        let list = ListDoc::new(&doc);
        let items = doc.get_or_insert_map(schema::ITEMS);
        let mut txn = doc.transact_mut();
        list.add_item(&mut txn, &milk()).expect("valid");
        // Wrong types and missing fields, as a careless client might write.
        items.insert(&mut txn, "0191d6b2-7c1e-7a3b-9f00-000000000001", 42);
        items.insert(
            &mut txn,
            "0191d6b2-7c1e-7a3b-9f00-000000000002",
            MapPrelim::from([("quantity", "1")]),
        );
        items.insert(&mut txn, "not-an-id", MapPrelim::from([("name", "Eggs")]));
        items.insert(
            &mut txn,
            "0191d6b2-7c1e-7a3b-9f00-000000000003",
            MapPrelim::from([("name", "Eggs"), ("status", "lost")]),
        );
        let weird = MapPrelim::from([
            ("name", In::Any(Any::from("Bread"))),
            ("quantity", In::Any(Any::from(3.0))),
        ]);
        items.insert(&mut txn, "0191d6b2-7c1e-7a3b-9f00-000000000004", weird);
        let snapshot = list.read(&txn);
        let names: Vec<_> = snapshot.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"Milk") && names.contains(&"Bread"));
        assert_eq!(snapshot.skipped.items, 4);
        assert_eq!(snapshot.skipped.fields, 1, "the numeric quantity");
    }

    #[test]
    fn orders_round_trip_and_change_status() {
        let doc = Doc::new();
        let list = ListDoc::new(&doc);
        let mut txn = doc.transact_mut();
        let order = NewOrder {
            id: "0191d6b2-7c1e-7a3b-9f00-0000000000aa".into(),
            vendor_id: "vendor-1".into(),
            items: vec![OrderItemRow {
                item_id: Some(ITEM.into()),
                name: "Milk".into(),
                quantity: Some("2 l".into()),
            }],
            placed_by: Some("user-1".into()),
            placed_at_ms: 5,
            note: None,
            share_id: Some("0191d6b2-7c1e-7a3b-9f00-0000000000bb".into()),
        };
        list.add_order(&mut txn, &order).expect("valid");
        list.set_order_status(&mut txn, &order.id, OrderStatus::Confirmed)
            .expect("exists");
        let snapshot = list.read(&txn);
        assert_eq!(snapshot.orders.len(), 1);
        assert_eq!(snapshot.orders[0].status, OrderStatus::Confirmed);
        assert_eq!(snapshot.orders[0].items, order.items);
        assert_eq!(snapshot.orders[0].placed_at_ms, Some(5));
        assert_eq!(snapshot.orders[0].share_id, order.share_id);
    }
}
