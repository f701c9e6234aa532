;; `wasi-future`: a component that imports a WASI interface at a version
;; Tessera does not link (`wasi:cli/environment@0.3.0`; Tessera links the
;; WASI 0.2 interfaces), for testing that the refusal names the version
;; Tessera provides. Written by hand in the WebAssembly text format.
(component
  (import "wasi:cli/environment@0.3.0" (instance $env
    (export "get-arguments" (func (result (list string))))))

  (core module $m
    ;; The number of arguments it would see (always 0: it never links).
    (func (export "count") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))

  (func (export "count") (result u32)
    (canon lift (core func $i "count"))))
