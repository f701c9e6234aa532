//! `example-rust`: the catalog example tool (`wit/example/catalog.wit`,
//! world `tool`) in Rust. The same interface is implemented in Python,
//! JavaScript, C and Go under `components/example-<language>`, and every
//! one answers the same JSON to the same call.

wit_bindgen::generate!({
    world: "tool",
    // A symlink to the shared `wit/example` package.
    path: "wit",
});

use std::collections::BTreeSet;

use exports::tessera::example::catalog::{Guest, Item, RestockError, Summary};

/// The component's single implementation type.
struct Component;

impl Guest for Component {
    fn summarize(items: Vec<Item>) -> Summary {
        let mut units: u64 = 0;
        let mut value_cents: u64 = 0;
        let mut largest: Option<&Item> = None;
        // `String`'s order is byte order, and a set keeps each tag once.
        let mut tags = BTreeSet::new();
        for item in &items {
            units += u64::from(item.quantity);
            if let Some(price) = item.price_cents {
                // A product fits a u64 ((2^32 - 1)^2 < 2^64); the sum
                // wraps past 2^64, as u64 arithmetic does in C and Go.
                value_cents = value_cents.wrapping_add(u64::from(item.quantity) * u64::from(price));
            }
            // Strictly more: the first item wins a tie.
            if largest.is_none_or(|l| item.quantity > l.quantity) {
                largest = Some(item);
            }
            tags.extend(item.tags.iter().map(String::as_str));
        }
        Summary {
            // A list passed in has fewer than 2^32 elements.
            items: u32::try_from(items.len()).unwrap_or(u32::MAX),
            units,
            value_cents,
            largest: largest.map(|l| l.name.clone()),
            tags: tags.into_iter().map(str::to_string).collect(),
        }
    }

    fn filter(items: Vec<Item>, tag: Option<String>) -> Vec<Item> {
        match tag {
            None => items,
            Some(tag) => items
                .into_iter()
                .filter(|item| item.tags.contains(&tag))
                .collect(),
        }
    }

    fn restock(mut items: Vec<Item>, name: String, units: u32) -> Result<Vec<Item>, RestockError> {
        let Some(item) = items.iter_mut().find(|item| item.name == name) else {
            return Err(RestockError::UnknownItem(name));
        };
        item.quantity = item
            .quantity
            .checked_add(units)
            .ok_or(RestockError::Overflow)?;
        Ok(items)
    }
}

export!(Component);
