// The `tessera:example/catalog` interface in C, on the bindings that
// `wit-bindgen c` generates for the world `tool` of wit/example (tool.h,
// tool.c). See ../README.md.
//
// Ownership follows wit-bindgen's C conventions: an export owns its
// arguments (it frees them before it returns), and the generated
// post-return functions free what it returns, so every value returned is
// freshly allocated.

#include <stdlib.h>
#include <string.h>

#include "tool.h"

typedef exports_tessera_example_catalog_item_t item_t;
typedef exports_tessera_example_catalog_list_item_t item_list_t;
typedef exports_tessera_example_catalog_summary_t summary_t;
typedef exports_tessera_example_catalog_restock_error_t restock_error_t;

// malloc that never returns NULL: running out of memory is a trap.
static void *xmalloc(size_t size) {
    if (size == 0) {
        return NULL;
    }
    void *p = malloc(size);
    if (p == NULL) {
        abort();
    }
    return p;
}

static void string_copy(tool_string_t *dst, const tool_string_t *src) {
    tool_string_dup_n(dst, (const char *)src->ptr, src->len);
}

static bool string_eq(const tool_string_t *a, const tool_string_t *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

// Byte-wise comparison; a proper prefix sorts first.
static int string_cmp(const void *pa, const void *pb) {
    const tool_string_t *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n == 0 ? 0 : memcmp(a->ptr, b->ptr, n);
    if (c != 0) {
        return c;
    }
    return (a->len > b->len) - (a->len < b->len);
}

static void item_copy(item_t *dst, const item_t *src) {
    string_copy(&dst->name, &src->name);
    dst->quantity = src->quantity;
    dst->price_cents = src->price_cents;
    dst->tags.len = src->tags.len;
    dst->tags.ptr = xmalloc(src->tags.len * sizeof(tool_string_t));
    for (size_t i = 0; i < src->tags.len; i++) {
        string_copy(&dst->tags.ptr[i], &src->tags.ptr[i]);
    }
}

static bool item_has_tag(const item_t *item, const tool_string_t *tag) {
    for (size_t i = 0; i < item->tags.len; i++) {
        if (string_eq(&item->tags.ptr[i], tag)) {
            return true;
        }
    }
    return false;
}

void exports_tessera_example_catalog_summarize(item_list_t *items, summary_t *ret) {
    size_t tag_count = 0;
    for (size_t i = 0; i < items->len; i++) {
        tag_count += items->ptr[i].tags.len;
    }
    // Every tag (copied), sorted, then each kept once.
    tool_string_t *tags = xmalloc(tag_count * sizeof(tool_string_t));
    size_t n = 0;
    ret->items = (uint32_t)items->len;
    ret->units = 0;
    ret->value_cents = 0;
    ret->largest.is_some = false;
    const item_t *largest = NULL;
    for (size_t i = 0; i < items->len; i++) {
        const item_t *item = &items->ptr[i];
        ret->units += item->quantity;
        if (item->price_cents.is_some) {
            ret->value_cents += (uint64_t)item->quantity * item->price_cents.val;
        }
        if (largest == NULL || item->quantity > largest->quantity) {
            largest = item;
        }
        for (size_t j = 0; j < item->tags.len; j++) {
            string_copy(&tags[n++], &item->tags.ptr[j]);
        }
    }
    if (largest != NULL) {
        ret->largest.is_some = true;
        string_copy(&ret->largest.val, &largest->name);
    }
    if (n > 1) {
        qsort(tags, n, sizeof(tool_string_t), string_cmp);
    }
    size_t unique = 0;
    for (size_t i = 0; i < n; i++) {
        if (unique > 0 && string_eq(&tags[unique - 1], &tags[i])) {
            tool_string_free(&tags[i]);
        } else {
            tags[unique++] = tags[i];
        }
    }
    ret->tags.ptr = tags;
    ret->tags.len = unique;
    exports_tessera_example_catalog_list_item_free(items);
}

void exports_tessera_example_catalog_filter(item_list_t *items, tool_string_t *maybe_tag,
                                            item_list_t *ret) {
    ret->ptr = xmalloc(items->len * sizeof(item_t));
    ret->len = 0;
    for (size_t i = 0; i < items->len; i++) {
        if (maybe_tag == NULL || item_has_tag(&items->ptr[i], maybe_tag)) {
            item_copy(&ret->ptr[ret->len++], &items->ptr[i]);
        }
    }
    if (ret->len == 0) {
        free(ret->ptr);
        ret->ptr = NULL;
    }
    exports_tessera_example_catalog_list_item_free(items);
    if (maybe_tag != NULL) {
        tool_string_free(maybe_tag);
    }
}

bool exports_tessera_example_catalog_restock(item_list_t *items, tool_string_t *name,
                                             uint32_t units, item_list_t *ret,
                                             restock_error_t *err) {
    size_t found = items->len;
    for (size_t i = 0; i < items->len; i++) {
        if (string_eq(&items->ptr[i].name, name)) {
            found = i;
            break;
        }
    }
    bool ok = false;
    if (found == items->len) {
        err->tag = EXPORTS_TESSERA_EXAMPLE_CATALOG_RESTOCK_ERROR_UNKNOWN_ITEM;
        string_copy(&err->val.unknown_item, name);
    } else if ((uint64_t)items->ptr[found].quantity + units > UINT32_MAX) {
        err->tag = EXPORTS_TESSERA_EXAMPLE_CATALOG_RESTOCK_ERROR_OVERFLOW;
    } else {
        ret->ptr = xmalloc(items->len * sizeof(item_t));
        ret->len = items->len;
        for (size_t i = 0; i < items->len; i++) {
            item_copy(&ret->ptr[i], &items->ptr[i]);
        }
        ret->ptr[found].quantity += units;
        ok = true;
    }
    exports_tessera_example_catalog_list_item_free(items);
    tool_string_free(name);
    return ok;
}
