// description: elementwise C = A + B on 256x256 f32 (linalg.add)
func.func @add(%A: tensor<256x256xf32>, %B: tensor<256x256xf32>) -> tensor<256x256xf32> {
  %init = tensor.empty() : tensor<256x256xf32>
  %R = linalg.add ins(%A, %B : tensor<256x256xf32>, tensor<256x256xf32>) outs(%init : tensor<256x256xf32>) -> tensor<256x256xf32>
  return %R : tensor<256x256xf32>
}
