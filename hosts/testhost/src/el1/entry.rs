//! The image header, the boot and secondary entry points and the EL1
//! exception vectors.
//!
//! Boot protocol (as for an arm64 Linux kernel): entered at EL1h with the
//! MMU off, DAIF masked and x0 = the device tree's physical address. The
//! header is the arm64 Linux `Image` header (Documentation/arch/arm64/
//! booting.rst), so that QEMU's `-kernel` can boot the test host alone
//! (standalone mode): text_offset 0x04000000 from the 2 MiB-aligned RAM
//! base puts it at 0x44000000 on `virt`, where it is linked. Under Warden
//! the image is placed there by QEMU's generic loader instead and the
//! header is just skipped by the first instruction.
//!
//! A secondary CPU is started through PSCI CPU_ON with
//! `testhost_secondary_entry` as the entry point and its CPU index as the
//! context (x0). It turns its MMU on from the boot CPU's parameters before
//! running any Rust code, so nothing it writes with the MMU off can be
//! shadowed by stale cache lines afterwards.

use super::exception::FRAME_SIZE;
use super::mmu::TESTHOST_MMU;
use super::smp::secondary_main;
use super::testhost_main;
use warden_testhost::machine::MAX_CPUS;

/// Bytes of stack per CPU (linker.ld reserves MAX_CPUS of them).
pub const STACK_SIZE: usize = 64 << 10;

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       .Lentry                 // code0: branch over the header
    .long   0                       // code1
    .quad   0x04000000              // text_offset: RAM base + 64 MiB
    .quad   __image_size            // image_size, .bss and stacks included
    .quad   0xa                     // flags: LE, 4 KiB pages, anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5

.Lentry:
    msr     daifset, #0xf
    mov     x19, x0                 // the device tree

    // Absolute addresses are used everywhere: run only where linked.
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    .Lpark
    // EL1 only (standalone QEMU without virtualization, or under Warden).
    mrs     x1, CurrentEL
    cmp     x1, #(1 << 2)
    b.ne    .Lpark

    msr     tpidr_el1, xzr          // CPU index 0: the boot CPU
    // Compiled Rust uses FP/SIMD registers: CPACR_EL1.FPEN = 0b11.
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, testhost_vectors
    add     x1, x1, :lo12:testhost_vectors
    msr     vbar_el1, x1
    isb

    // The first stack, and .bss zeroed (page-aligned: 16-byte steps).
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #{stack_size}
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
    mov     x0, x19
    bl      {main}                  // never returns

.Lpark:
    // Wrong place or exception level: nothing can report safely.
    wfe
    b       .Lpark
    .ltorg

    .section .text.secondary, "ax"
    .global testhost_secondary_entry
testhost_secondary_entry:
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #(1 << 2)
    b.ne    9f
    // x0 = CPU index from CPU_ON's context: 1..MAX_CPUS.
    cbz     x0, 9f
    cmp     x0, #{max_cpus}
    b.hs    9f
    mov     x19, x0
    msr     tpidr_el1, x19
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, testhost_vectors
    add     x1, x1, :lo12:testhost_vectors
    msr     vbar_el1, x1
    isb

    // The MMU as the boot CPU set it up: MAIR, TCR, TTBR0, SCTLR, read
    // with the MMU off (the boot CPU cleaned them to the point of
    // coherency). No SCTLR value yet means no parameters: park.
    adrp    x1, {mmu}
    add     x1, x1, :lo12:{mmu}
    ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    cbz     x5, 9f
    msr     mair_el1, x2
    msr     tcr_el1, x3
    msr     ttbr0_el1, x4
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el1, x5
    isb

    // This CPU's stack: __stacks_start + (index + 1) * STACK_SIZE.
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    mov     x0, x19
    bl      {secondary}             // never returns
9:  wfe
    b       9b

    // The EL1 vector table: 16 entries of 128 bytes, 2 KiB aligned. Each
    // saves x0/x1 in a new frame and passes its index to the common path,
    // which saves the rest (FP/SIMD too: the handler is compiled Rust),
    // calls testhost_exception(index, frame) and restores everything,
    // ELR_EL1 and SPSR_EL1 from the frame (the handler may move ELR).
    .section .text.vectors, "ax"
    .balign 2048
    .global testhost_vectors
testhost_vectors:
    .irp    idx, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp]
    mov     x0, #\idx
    b       .Lsave
    .endr
.Lsave:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    stp     q0, q1, [sp, #256]
    stp     q2, q3, [sp, #288]
    stp     q4, q5, [sp, #320]
    stp     q6, q7, [sp, #352]
    stp     q8, q9, [sp, #384]
    stp     q10, q11, [sp, #416]
    stp     q12, q13, [sp, #448]
    stp     q14, q15, [sp, #480]
    stp     q16, q17, [sp, #512]
    stp     q18, q19, [sp, #544]
    stp     q20, q21, [sp, #576]
    stp     q22, q23, [sp, #608]
    stp     q24, q25, [sp, #640]
    stp     q26, q27, [sp, #672]
    stp     q28, q29, [sp, #704]
    stp     q30, q31, [sp, #736]
    add     x4, sp, #768            // past stp's immediate range
    mrs     x2, fpsr
    mrs     x3, fpcr
    stp     x2, x3, [x4]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [x4, #16]

    mov     x1, sp
    bl      testhost_exception

    add     x4, sp, #768
    ldp     x2, x3, [x4, #16]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x2, x3, [x4]
    msr     fpsr, x2
    msr     fpcr, x3
    ldp     q0, q1, [sp, #256]
    ldp     q2, q3, [sp, #288]
    ldp     q4, q5, [sp, #320]
    ldp     q6, q7, [sp, #352]
    ldp     q8, q9, [sp, #384]
    ldp     q10, q11, [sp, #416]
    ldp     q12, q13, [sp, #448]
    ldp     q14, q15, [sp, #480]
    ldp     q16, q17, [sp, #512]
    ldp     q18, q19, [sp, #544]
    ldp     q20, q21, [sp, #576]
    ldp     q22, q23, [sp, #608]
    ldp     q24, q25, [sp, #640]
    ldp     q26, q27, [sp, #672]
    ldp     q28, q29, [sp, #704]
    ldp     q30, q31, [sp, #736]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp]
    add     sp, sp, #{frame}
    eret
"#,
    main = sym testhost_main,
    secondary = sym secondary_main,
    mmu = sym TESTHOST_MMU,
    stack_size = const STACK_SIZE,
    max_cpus = const MAX_CPUS,
    frame = const FRAME_SIZE,
);
