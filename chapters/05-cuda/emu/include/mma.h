/* mma.h — the CUDA emulator's nvcuda::wmma (see ../cr_emu_wmma.h); nothing from a CUDA toolkit. */
#include "../cr_emu_wmma.h"
