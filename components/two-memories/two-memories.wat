;; `two-memories`: a component whose instance has two linear memories, one
;; in each of its two core modules, for testing that the memory limit
;; covers their total. Both memories start at one 64 KiB page.
(component
  ;; Memory B, grown through the module's export.
  (core module $b
    (memory $memory 1)
    ;; Grows memory B by `pages` and returns its size in pages; traps if the
    ;; growth is refused.
    (func (export "grow") (param $pages i32) (result i32)
      (if (i32.eq (memory.grow $memory (local.get $pages)) (i32.const -1))
        (then unreachable))
      (memory.size $memory)))

  ;; Memory A, and the function the component exports.
  (core module $a
    (import "b" "grow" (func $grow-b (param i32) (result i32)))
    (memory $memory 1)
    ;; Grows memory A by `a-pages`, then memory B by `b-pages`, and returns
    ;; the size of both together in pages; traps if a growth is refused.
    (func (export "grow") (param $a-pages i32) (param $b-pages i32) (result i32)
      (if (i32.eq (memory.grow $memory (local.get $a-pages)) (i32.const -1))
        (then unreachable))
      (i32.add
        (memory.size $memory)
        (call $grow-b (local.get $b-pages)))))

  (core instance $b (instantiate $b))
  (core instance $a (instantiate $a (with "b" (instance $b))))

  (func (export "grow") (param "a-pages" u32) (param "b-pages" u32) (result u32)
    (canon lift (core func $a "grow"))))
