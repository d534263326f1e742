//! Names of the root maps and fields of a list document, and the closed sets
//! of status values (DESIGN §3). Field names are camelCase because JavaScript
//! clients write them.

/// Root map with the list's name, description and status.
pub const META: &str = "meta";
/// Root map of items keyed by item id (a UUID string).
pub const ITEMS: &str = "items";
/// Root map of orders keyed by order id.
pub const ORDERS: &str = "orders";

pub mod field {
    pub const NAME: &str = "name";
    pub const DESCRIPTION: &str = "description";
    pub const STATUS: &str = "status";
    pub const QUANTITY: &str = "quantity";
    pub const CATEGORY: &str = "category";
    pub const NOTE: &str = "note";
    pub const ASSIGNEE: &str = "assignee";
    pub const POSITION: &str = "position";
    pub const ADDED_BY: &str = "addedBy";
    pub const ADDED_AT: &str = "addedAt";
    pub const VENDOR_ID: &str = "vendorId";
    pub const ITEMS: &str = "items";
    pub const ITEM_ID: &str = "itemId";
    pub const PLACED_BY: &str = "placedBy";
    pub const PLACED_AT: &str = "placedAt";
    pub const SHARE_ID: &str = "shareId";
}

macro_rules! closed_set {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as stored in the document.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses a stored value; `None` when it is not one of the set.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set!(
    /// `meta.status` of a list.
    ListStatus { Active => "active", Archived => "archived" }
);
closed_set!(
    /// `status` of an item.
    ItemStatus { Needed => "needed", InCart => "in_cart", Purchased => "purchased" }
);
closed_set!(
    /// `status` of an order.
    OrderStatus { Placed => "placed", Confirmed => "confirmed", Delivered => "delivered", Cancelled => "cancelled" }
);

/// True when `text` is a UUID in its canonical hyphenated form (any version).
pub fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_text() {
        for s in ItemStatus::ALL {
            assert_eq!(ItemStatus::parse(s.as_str()), Some(*s));
        }
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(*s));
        }
        for s in ListStatus::ALL {
            assert_eq!(ListStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(ItemStatus::parse("bought"), None);
    }

    #[test]
    fn uuid_check_accepts_only_the_hyphenated_form() {
        assert!(is_uuid("0191d6b2-7c1e-7a3b-9f00-123456789abc"));
        assert!(!is_uuid("0191d6b27c1e7a3b9f00123456789abc"));
        assert!(!is_uuid("0191d6b2-7c1e-7a3b-9f00-123456789abz"));
        assert!(!is_uuid(""));
    }
}
