/*
 * A stand-in for Windows' bcryptprimitives.dll, for running the Windows
 * test binaries under wine 8.0 (Debian 12), which does not have it.
 *
 * Rust's standard library (1.78 and later) fills its random seeds with
 * ProcessPrng from bcryptprimitives.dll and imports it at load time, so
 * without this DLL beside the .exe no Rust test binary starts under that
 * wine. ProcessPrng here forwards to RtlGenRandom (advapi32's
 * SystemFunction036), which wine has. Built by .ci/run with mingw-w64:
 *
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *       bcryptprimitives.c -ladvapi32
 *
 * Never shipped: it exists only to run tests under wine.
 */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        /* RtlGenRandom takes a ULONG length. */
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
