// test_extern_c.cu — test_extern_c.cpp compiled by nvcc: the library links from CUDA code.
#include "test_extern_c.cpp"
