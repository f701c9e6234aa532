// Package main is the `tessera:example/catalog` interface in Go: the
// functions here are plain Go, and abi.go lifts their arguments from and
// lowers their results to the component model's canonical ABI. See
// README.md.
package main

import (
	"math"
	"sort"
)

// Item is the WIT record `item`.
type Item struct {
	Name     string
	Quantity uint32
	// PriceCents is the WIT `option<u32>`: nil when the item has no price.
	PriceCents *uint32
	Tags       []string
}

// Summary is the WIT record `summary`.
type Summary struct {
	Items      uint32
	Units      uint64
	ValueCents uint64
	// Largest is the WIT `option<string>`: nil when there are no items.
	Largest *string
	Tags    []string
}

// RestockError is the WIT variant `restock-error`: UnknownItem holds the
// payload of the case `unknown-item`, Overflow marks the case `overflow`.
type RestockError struct {
	UnknownItem string
	Overflow    bool
}

// Summarize implements `summarize`.
func Summarize(items []Item) Summary {
	s := Summary{Items: uint32(len(items)), Tags: []string{}}
	seen := map[string]bool{}
	var largest *Item
	for i := range items {
		item := &items[i]
		s.Units += uint64(item.Quantity)
		if item.PriceCents != nil {
			s.ValueCents += uint64(item.Quantity) * uint64(*item.PriceCents)
		}
		if largest == nil || item.Quantity > largest.Quantity {
			largest = item
		}
		for _, tag := range item.Tags {
			if !seen[tag] {
				seen[tag] = true
				s.Tags = append(s.Tags, tag)
			}
		}
	}
	if largest != nil {
		name := largest.Name
		s.Largest = &name
	}
	// Go compares strings byte by byte.
	sort.Strings(s.Tags)
	return s
}

// Filter implements `filter`: tag nil is the WIT `none`.
func Filter(items []Item, tag *string) []Item {
	out := []Item{}
	for _, item := range items {
		if tag == nil || hasTag(item, *tag) {
			out = append(out, item)
		}
	}
	return out
}

func hasTag(item Item, tag string) bool {
	for _, t := range item.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// Restock implements `restock`: a non-nil error is the WIT `err` case.
func Restock(items []Item, name string, units uint32) ([]Item, *RestockError) {
	for i := range items {
		if items[i].Name != name {
			continue
		}
		if uint64(items[i].Quantity)+uint64(units) > math.MaxUint32 {
			return nil, &RestockError{Overflow: true}
		}
		out := append([]Item(nil), items...)
		out[i].Quantity += units
		return out, nil
	}
	return nil, &RestockError{UnknownItem: name}
}

// A reactor: the runtime is started by `_initialize`, and main never runs.
func main() {}
