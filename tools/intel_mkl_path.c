/* Tell Intel's MKL (linked into torch's CPU library) that the CPU is an Intel one, so that it takes the code path
 * it takes on an Intel CPU with the same instructions rather than its generic path for other vendors.
 *
 * MKL chooses its kernels by the CPU's vendor as well as its instruction set: on an AMD EPYC with AVX-512 it runs
 * its generic x86 path, so float32 matrix products round differently than on an Intel Xeon with AVX-512, and a
 * model trained from the same code, seed and data differs in its last bits. Preloaded, this library answers MKL's
 * vendor check, mkl_serv_intel_cpu_true(), with "yes"; the instructions MKL then uses are still those the CPU
 * reports, so it only runs on a CPU that has them. tools/intel_mkl_path.sh builds and preloads it. */
int mkl_serv_intel_cpu_true(void) { return 1; }
int mkl_serv_intel_cpu(void) { return 1; }
