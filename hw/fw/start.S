/* Reset entry of the compact accelerator's firmware (mmfree.hw.soc): the processor starts here, at
 * address 0 of the boot ROM. Sets the global and stack pointers, copies .data from the ROM into the
 * SPRAM, clears .bss and calls main(). The symbols come from the generated linker script
 * (mmfree.hw.soc.SocMap.linker_script). */

    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    la      sp, _stack_top

    la      a0, _data_load
    la      a1, _data_start
    la      a2, _data_end
1:  bgeu    a1, a2, 2f
    lw      t0, 0(a0)
    sw      t0, 0(a1)
    addi    a0, a0, 4
    addi    a1, a1, 4
    j       1b

2:  la      a0, _bss_start
    la      a1, _bss_end
3:  bgeu    a0, a1, 4f
    sw      zero, 0(a0)
    addi    a0, a0, 4
    j       3b

4:  call    main
5:  j       5b
