// Where each lane points ldmatrix.x4 so that the four 8x8 matrices it loads are the A or B
// fragments of mma.m16n8k16 (layouts in mma.cuh). Pure index math, shared by the kernels and
// by the host emulator of dev/flash_emu.
#pragma once
#include <cuda_runtime.h>

namespace ftune::device {

// Shared-memory offsets (in elements) of lane `lane`'s row address for the ldmatrix.x4 loads of
// a row-major tile with leading dimension ld, at tile row r0, column c0:
//  - a_frag: the A fragment of the 16x16 block (rows r0.., cols c0..): matrices
//    (r0, c0), (r0+8, c0), (r0, c0+8), (r0+8, c0+8) -> a0..a3.
//  - b_frag: B fragments of two n-blocks when the tile is stored [n][k] (B = tile^T, e.g. K in
//    Q K^T): matrices (n r0, k c0), (r0, c0+8), (r0+8, c0), (r0+8, c0+8) -> b0, b1 of n-block
//    r0 and b0, b1 of n-block r0+8.
//  - bt_frag (with .trans): B fragments of two n-blocks when the tile is stored [k][n] (e.g. V
//    in P V): matrices (k r0, n c0), (r0+8, c0), (r0, c0+8), (r0+8, c0+8) -> b0, b1 of n-block
//    c0 and b0, b1 of n-block c0+8.
//  - at_frag (with .trans): the A fragment of the 16x16 block whose transpose is stored, i.e.
//    A[m][k] = tile[k][m] with the tile at k rows r0.., m columns c0..: matrices
//    (k r0, m c0), (r0, c0+8), (r0+8, c0), (r0+8, c0+8) -> a0..a3.
// a_frag and bt_frag use the same addresses, as do b_frag and at_frag.
__host__ __device__ inline int a_frag_offset(int lane, int ld, int r0, int c0) {
  return (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + c0 + (lane >> 4) * 8;
}
__host__ __device__ inline int b_frag_offset(int lane, int ld, int r0, int c0) {
  return (r0 + (lane & 7) + (lane >> 4) * 8) * ld + c0 + ((lane >> 3) & 1) * 8;
}

}  // namespace ftune::device
