;; `missing-import`: a component that imports an interface no host
;; provides (`example:missing/thing`), for testing that Tessera refuses to
;; add it, names the missing interface and still lists what it exports.
;; Written by hand in the WebAssembly text format: no toolchain makes a
;; component import an interface that does not exist on request.
(component
  (import "example:missing/thing" (instance $thing
    (export "get" (func (param "key" u32) (result u32)))))
  (core func $get (canon lower (func $thing "get")))

  (core module $m
    (import "thing" "get" (func $get (param i32) (result i32)))
    ;; a + b, without the import.
    (func (export "add") (param $a i32) (param $b i32) (result i32)
      (i32.add (local.get $a) (local.get $b)))
    ;; The imported `get` of `key`.
    (func (export "lookup") (param $key i32) (result i32)
      (call $get (local.get $key))))
  (core instance $i (instantiate $m
    (with "thing" (instance (export "get" (func $get))))))

  (func (export "add") (param "a" u32) (param "b" u32) (result u32)
    (canon lift (core func $i "add")))
  (func (export "lookup") (param "key" u32) (result u32)
    (canon lift (core func $i "lookup"))))
