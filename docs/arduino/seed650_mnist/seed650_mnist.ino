/*
 * seed650_mnist.ino - run a layerlab C export on an Arduino-compatible board (ESP32, Cortex-M).
 *
 * Setup: export the model, then copy the two library files next to this sketch:
 *
 *     layerlab export seed650.keras --to c --out seed650_c --name seed650          (float32)
 *     layerlab export seed650.keras --to c --out seed650_c --name seed650 --int8   (int8)
 *     cp seed650_c/seed650.h seed650_c/seed650.c seed650_mnist/
 *
 * The Arduino IDE compiles seed650.c as C; the header's extern "C" lets this C++ sketch call it.
 * Protocol on the serial port (115200 baud): send 784 bytes, the pixels of a 28x28 grey digit
 * row by row (0 = black background, 255 = white ink, as MNIST); the board answers with one line:
 *     digit 7 (p=0.998) in 412 us
 * With no host attached it classifies the built-in test pattern every 5 seconds.
 * Not run by layerlab's tests (no board here); the same library runs under QEMU in the tests.
 */
#include "seed650.h"

static float image[SEED650_INPUT_SIZE];  /* the model input: pixels / 255, C order */
static float scores[SEED650_OUTPUT_SIZE];
static uint8_t pixels[SEED650_INPUT_SIZE];

/* A crude "1": a vertical bar, so the sketch does something without a host. */
static void make_test_pattern(void)
{
    for (int i = 0; i < SEED650_INPUT_SIZE; ++i) {
        const int y = i / 28, x = i % 28;
        pixels[i] = (y >= 4 && y < 24 && x >= 13 && x < 16) ? 255 : 0;
    }
}

static void classify(void)
{
    for (int i = 0; i < SEED650_INPUT_SIZE; ++i) {
        image[i] = pixels[i] / 255.0f;
    }
    const unsigned long start = micros();
    seed650_predict(image, scores);  /* float in, float out; the int8 export quantizes inside */
    const unsigned long elapsed = micros() - start;
    int best = 0;
    for (int k = 1; k < SEED650_OUTPUT_SIZE; ++k) {
        if (scores[k] > scores[best]) {
            best = k;
        }
    }
    Serial.print("digit ");
    Serial.print(best);
    Serial.print(" (p=");
    Serial.print(scores[best], 3);
    Serial.print(") in ");
    Serial.print(elapsed);
    Serial.println(" us");
}

void setup()
{
    Serial.begin(115200);
#ifdef SEED650_INT8
    Serial.println("layerlab seed650, int8");
#else
    Serial.println("layerlab seed650, float32");
#endif
}

void loop()
{
    static unsigned long last = 0;
    if (Serial.available() >= SEED650_INPUT_SIZE) {
        Serial.readBytes((char *)pixels, SEED650_INPUT_SIZE);
        classify();
        last = millis();
    } else if (millis() - last > 5000) {
        make_test_pattern();
        classify();
        last = millis();
    }
}
