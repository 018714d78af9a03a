//! The image header, the boot CPU's entry and the EL2 exception vectors.
//!
//! The header is the arm64 Linux `Image` header (Documentation/arch/arm64/
//! booting.rst): QEMU recognises its magic, loads the raw binary 2 MiB
//! into RAM (text_offset 0 is below QEMU's boot stub, so it adds 2 MiB), and
//! enters at EL2 (with `virtualization=on` and no EL3 firmware) with the
//! device tree's physical address in x0, MMU and caches off.

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       .Lentry                 // code0: branch over the header
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size, NOLOAD parts included
    .quad   0xa                     // flags: LE, 4 KiB pages, any placement
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5

.Lentry:
    mov     x19, x0                 // the device tree, for warden_main
    msr     daifset, #0xf           // no interrupts or aborts until vectors exist

    // Code and data use absolute addresses: run only where linked.
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    .Lfail

    // The boot stack, and .bss zeroed (page-aligned, so 16-byte steps work).
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
0:  cmp     x1, x2
    b.hs    1f
    stp     xzr, xzr, [x1], #16
    b       0b
1:
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    .Lfail

    // Let EL2 use FP/SIMD (compiled Rust may): CPTR_EL2 = its RES1 bits
    // with TFP clear (non-VHE layout).
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    // Faults report instead of hanging from here on.
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb

    mov     x0, x19
    bl      warden_main             // never returns

.Lfail:
    // Wrong load address or exception level: nothing can be printed
    // safely; try PSCI SYSTEM_OFF (QEMU: via SMC), then park.
    movz    x0, #0x0008
    movk    x0, #0x8400, lsl #16
    smc     #0
2:  wfe
    b       2b
    .ltorg

    // The EL2 vector table: 16 entries of 128 bytes, 2 KiB aligned. Every
    // entry passes its index to warden_exception on a fresh stack (the
    // fault may have been a stack overflow into the guard page).
    .section .text.vectors, "ax"
    .balign 2048
    .global el2_vectors
el2_vectors:
    .irp    idx, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\idx
    b       .Lvector_common
    .endr
.Lvector_common:
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    bl      warden_exception        // never returns
3:  wfe
    b       3b
"#
);
