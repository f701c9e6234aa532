;; `toolchain-exports`: a component that exports, beside two ordinary
;; functions (`add`, `sub`), the entry points toolchains add to the
;; components they build:
;;
;; - componentize-py's initializer: `init` in an interface named `exports`,
;;   taking `app-name` and `symbols` (componentize-py's `componentize-py:init`
;;   world; its `symbols` is a record describing the Python bindings, here a
;;   list of strings). componentize-py calls it once while it builds the
;;   component; called afterwards, it traps, and so does this one.
;; - `wasi:cli/run@0.2.0#run`, the `main` of a command, which toolchains such
;;   as TinyGo export from every component they build. This one returns `ok`.
;;
;; Written in the WebAssembly text format because no compiler produces these
;; exports on request; assembled by `assemble-wat`.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    ;; `cabi_realloc` as a bump allocator that never frees: the canonical
    ;; ABI calls it to copy `init`'s string and list arguments in.
    (func (export "realloc")
      (param $old i32) (param $old-size i32) (param $align i32) (param $size i32)
      (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $next) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq
                (memory.grow
                  (i32.sub
                    (i32.add (i32.shr_u (global.get $next) (i32.const 16)) (i32.const 1))
                    (memory.size)))
                (i32.const -1))
            (then unreachable))))
      (local.get $ptr))
    (func (export "add") (param $a i32) (param $b i32) (result i32)
      (i32.add (local.get $a) (local.get $b)))
    (func (export "sub") (param $a i32) (param $b i32) (result i32)
      (i32.sub (local.get $a) (local.get $b)))
    ;; app-name (ptr, len), symbols (ptr, len), stub-wasi; the result is
    ;; returned through memory. Traps, as componentize-py's does after the
    ;; build.
    (func (export "init")
      (param i32 i32 i32 i32 i32) (result i32)
      unreachable)
    ;; `result` without payloads: 0 is `ok`.
    (func (export "run") (result i32)
      (i32.const 0)))

  (core instance $i (instantiate $m))

  (func $add (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func $sub (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "sub")))
  (func $init
    (param "app-name" string) (param "symbols" (list string)) (param "stub-wasi" bool)
    (result (result (error string)))
    (canon lift (core func $i "init")
      (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $run (result (result))
    (canon lift (core func $i "run")))

  (export "add" (func $add))
  (export "sub" (func $sub))
  (instance $exports (export "init" (func $init)))
  (export "exports" (instance $exports))
  (instance $cli-run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli-run)))
