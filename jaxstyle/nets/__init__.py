"""The networks: VGG (the loss network), Johnson's transformation network, and the convolution
forms they run on each backend (:mod:`jaxstyle.nets.conv`)."""
