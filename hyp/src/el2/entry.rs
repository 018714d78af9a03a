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
    msr     tpidr_el2, xzr          // the boot CPU is CPU 0 (its stack, its slot)

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

    // A secondary CPU, started by the firmware on Warden's behalf (the
    // host's PSCI CPU_ON, relayed): at EL2, MMU off, x0 = the CPU's index
    // (the context Warden gave the firmware). Turn the MMU on with the
    // boot CPU's table (values it cleaned to the PoC in SECONDARY_BOOT),
    // take this CPU's stack and call warden_secondary_main.
    .section .text, "ax"
    .global warden_secondary_entry
warden_secondary_entry:
    msr     daifset, #0xf
    cmp     x0, #{max_cpus}
    b.hs    .Lfail
    mov     x19, x0
    msr     tpidr_el2, x19
    mov     x1, #0x33ff             // CPTR_EL2: FP/SIMD usable at EL2
    msr     cptr_el2, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    adrp    x1, SECONDARY_BOOT
    add     x1, x1, :lo12:SECONDARY_BOOT
    ldp     x2, x3, [x1]            // MAIR_EL2, TCR_EL2
    ldp     x4, x5, [x1, #16]       // TTBR0_EL2, SCTLR_EL2
    msr     mair_el2, x2
    msr     tcr_el2, x3
    msr     ttbr0_el2, x4
    isb
    tlbi    alle2                   // nothing cached from before reset counts
    dsb     nsh
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el2, x5
    isb
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    lsl     x2, x19, #{stack_shift}
    sub     x1, x1, x2
    mov     sp, x1
    mov     x0, x19
    bl      warden_secondary_main   // never returns
4:  wfe
    b       4b

    // The EL2 vector table: 16 entries of 128 bytes, 2 KiB aligned.
    // Synchronous exceptions from the host (AArch64 EL1/EL0: HVC, trapped
    // SMC, stage-2 aborts) save the host's registers and return to it;
    // every other entry is unexpected and reports on a fresh stack (the
    // fault may have been a stack overflow into the guard page).
    .section .text.vectors, "ax"
    .balign 2048
    .global el2_vectors
el2_vectors:
    .irp    idx, 0, 1, 2, 3, 4, 5, 6, 7
    .balign 128
    mov     x0, #\idx
    b       .Lvector_common
    .endr
    .balign 128
    b       .Lhost_sync             // 8: synchronous from a lower EL, AArch64
    .irp    idx, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\idx
    b       .Lvector_common
    .endr

.Lvector_common:
    mrs     x1, tpidr_el2
    and     x1, x1, #{cpu_mask}
    adrp    x2, __stack_top
    add     x2, x2, :lo12:__stack_top
    lsl     x1, x1, #{stack_shift}
    sub     x2, x2, x1
    mov     sp, x2
    bl      warden_exception        // never returns
3:  wfe
    b       3b

    // The host's context on this CPU's EL2 stack (SP_EL2 is this CPU's
    // stack top whenever the host runs): x0-x30, ELR, SPSR, then the FP/SIMD
    // registers, which Warden's own compiled code may use. The layout is
    // HostFrame's (host.rs).
.Lhost_sync:
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
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
    mrs     x0, elr_el2
    stp     x30, x0, [sp, #240]
    mrs     x0, spsr_el2
    str     x0, [sp, #256]
    add     x0, sp, #{fp_off}
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    add     x0, sp, #{fpsr_off}
    mrs     x1, fpsr
    mrs     x2, fpcr
    stp     x1, x2, [x0]
    mov     x0, sp
    bl      warden_host_trap
    add     x0, sp, #{fpsr_off}
    ldp     x1, x2, [x0]
    msr     fpsr, x1
    msr     fpcr, x2
    add     x0, sp, #{fp_off}
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    ldr     x0, [sp, #256]
    msr     spsr_el2, x0
    ldp     x30, x0, [sp, #240]
    msr     elr_el2, x0
    ldp     x28, x29, [sp, #224]
    ldp     x26, x27, [sp, #208]
    ldp     x24, x25, [sp, #192]
    ldp     x22, x23, [sp, #176]
    ldp     x20, x21, [sp, #160]
    ldp     x18, x19, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret

    // enter_host(entry, x0, stack_top): drop to the host at EL1h with
    // every interrupt masked, x0 as given and every other register zero
    // (nothing of Warden's leaks), SP_EL2 reset to this CPU's stack top.
    .section .text, "ax"
    .global warden_enter_host
warden_enter_host:
    mov     sp, x2
    msr     elr_el2, x0
    mov     x2, #0x3c5              // SPSR: EL1h, D, A, I, F masked
    msr     spsr_el2, x2
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret
"#,
    max_cpus = const warden_hyp::psci_relay::MAX_CPUS,
    cpu_mask = const warden_hyp::psci_relay::MAX_CPUS - 1,
    stack_shift = const super::STACK_SHIFT,
    frame = const core::mem::size_of::<super::host::HostFrame>(),
    fp_off = const core::mem::offset_of!(super::host::HostFrame, q),
    fpsr_off = const core::mem::offset_of!(super::host::HostFrame, fpsr),
);
