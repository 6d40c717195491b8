/* CPU feature detection for the low-precision kernels (bfloat16, int8): what the processor has AND the
 * operating system lets a process use, read once with CPUID / XGETBV. No Python here.
 *
 * The kernels that use these instructions are compiled with function-level
 * __attribute__((target(...))), so the module loads on any x86-64; a kernel is called only when its
 * feature bit is set here. AMX also needs the kernel's permission on Linux (rf_amx_enable: the
 * ARCH_REQ_XCOMP_PERM request for the tile data, once per process; threads created later inherit it).
 */
#ifndef RF_CPU_H
#define RF_CPU_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <stdint.h>
#include <string.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

enum {
    RF_CPU_AVX2 = 1 << 0,        /* AVX2 + FMA */
    RF_CPU_AVX512 = 1 << 1,      /* AVX-512 F, BW, VL, DQ (and the OS saves the ZMM state) */
    RF_CPU_AVX512_VNNI = 1 << 2, /* vpdpbusd */
    RF_CPU_AVX512_BF16 = 1 << 3, /* vdpbf16ps, vcvtneps2bf16 */
    RF_CPU_AMX_BF16 = 1 << 4,    /* AMX tiles with tdpbf16ps (OS tile state enabled; permission: rf_amx_enable) */
    RF_CPU_AMX_INT8 = 1 << 5     /* AMX tiles with tdpbusd */
};

#if defined(__x86_64__) && defined(__GNUC__)
static inline unsigned long long rf_xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

/* The RF_CPU_* bits of this machine (each needs the OS support as well as the CPU's), read once: CPUID
 * can cost microseconds under a hypervisor, which traps it. */
static int rf_cpu_features(void) {
    static int cached = -1;
    int f = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (f >= 0) return f;
    f = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned int a = 0, b = 0, c = 0, d = 0;
    int osxsave = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)); /* else no AVX state (nor xgetbv) */
    int fma = osxsave && ((c >> 12) & 1);
    unsigned long long xcr0 = osxsave ? rf_xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;            /* XMM, YMM */
    int os_zmm = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    int os_amx = (xcr0 & 0x60000) == 0x60000;    /* XTILECFG, XTILEDATA */
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned int b7 = b, c7 = c, d7 = d;
        __cpuid_count(7, 1, a, b, c, d);
        unsigned int a71 = a;
        if (os_avx && fma && (b7 & (1u << 5))) f |= RF_CPU_AVX2;
        unsigned int avx512 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F, DQ, BW, VL */
        if (os_zmm && (b7 & avx512) == avx512) {
            f |= RF_CPU_AVX512;
            if (c7 & (1u << 11)) f |= RF_CPU_AVX512_VNNI;
            if (a71 & (1u << 5)) f |= RF_CPU_AVX512_BF16;
        }
        if (os_amx && (d7 & (1u << 24))) { /* AMX-TILE */
            if (d7 & (1u << 22)) f |= RF_CPU_AMX_BF16;
            if (d7 & (1u << 25)) f |= RF_CPU_AMX_INT8;
        }
    }
#endif
    __atomic_store_n(&cached, f, __ATOMIC_RELEASE);
    return f;
}

/* Asks Linux for the AMX tile data state (once per process; later calls return the first answer).
 * Returns 1 when AMX may be used. */
static int rf_amx_enable(void) {
    static int state = -1; /* -1: not asked yet */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s >= 0) return s;
    s = 0;
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
    if (rf_cpu_features() & (RF_CPU_AMX_BF16 | RF_CPU_AMX_INT8))
        s = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#endif
    __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    return s;
}

/* Loads this thread's AMX tile configuration the bf16 and int8 kernels share: palette 1, all 8 tiles
 * 16 rows x 64 bytes. (GCC 12 drops the stores to cfg before _tile_loadconfig, as if it read nothing: the
 * asm says that it reads cfg.) Call only where rf_amx_enable() returned 1. */
static inline void rf_amx_config_16x64(void) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

#endif
