/* Prototypes of cshape.c, absent from the pyradiomics 3.1.0 sdist. */
#include <stddef.h>
int calculate_coefficients(char *mask, int *size, int *strides, double *spacing, double *surfaceArea, double *volume, double *diameters);
int calculate_coefficients2D(char *mask, int *size, int *strides, double *spacing, double *perimeter, double *surface, double *diameter);
